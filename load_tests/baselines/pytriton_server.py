"""The Open Inference Protocol peer: Triton (through PyTriton) serving the same ONNX graphs.

Runs in a virtualenv of its own (``.venv-pytriton``: nvidia-pytriton pins numpy<2), which the
bench target makes. PyTriton starts Triton 2.51's server (its C++ HTTP frontend, dynamic batcher
and statistics) and runs each model instance's Python function in a backend stub process; each
instance holds one ONNX Runtime session opened by the service's own ``service.runtime`` with the
thread count given (the service's setting), so only the server differs. Each model takes the
tensor the service's V2 path takes (pixels in [0, 1] at the card's size) and gives its first
output, with a dynamic batcher of at most ``--max-batch`` rows and no queue delay, as the
service's continuous batcher forms batches.

    .venv-pytriton/bin/python -m load_tests.baselines.pytriton_server --port 8003 \
        --models models --names lenet5,resnet18 --instances 2 --access-token <token>

Bound to 127.0.0.1 (HTTP, gRPC and metrics). Statistics are a restricted endpoint in PyTriton:
clients send ``triton-access-token: <token>``. SIGINT stops it cleanly (SIGTERM leaves Triton's
processes behind).
"""

from __future__ import annotations

import argparse
import os
import socket
import sysconfig
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load_tests.baselines.pytriton_server")
    p.add_argument("--port", type=int, required=True, help="HTTP port (required)")
    p.add_argument("--models", type=Path, required=True, help="model repository (required)")
    p.add_argument("--names", required=True, help="comma-separated classifiers (required)")
    p.add_argument("--instances", type=int, default=2, help="instances per model (default 2)")
    p.add_argument("--max-batch", type=int, default=64, help="rows per execution (default 64)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    p.add_argument("--access-token", required=True, help="for the restricted endpoints (required)")
    return p.parse_args(argv)


def make_infer(session, input_name: str):
    """One instance's function: a batch of pixels in, the graph's first output out."""
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (first,) = session.run([session.get_outputs()[0].name], {input_name: inputs[input_name]})
        return {session.get_outputs()[0].name: first}

    return infer


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The Python backend's stub links against libpython: it must find the interpreter's.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    from load_tests.common import latest_version
    from service.card import load_card
    from service.runtime import RuntimeConfig, open_session, warm_up

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=free_port(),
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
    )
    runtime = RuntimeConfig(device="cpu", intra_op_threads=args.threads)
    security = TritonSecurityConfig(access_token=args.access_token)
    with Triton(config=config, security_config=security) as triton:
        for name in args.names.split(","):
            folder = latest_version(args.models, name)
            card = load_card(folder / "card.json")
            io = card.io["model"]
            pre, first, out = card.preprocess, io.inputs[0], io.outputs[0]
            functions = []
            for _ in range(args.instances):
                session, _ = open_session(folder / card.files["model"].path, runtime)
                warm_up(session, io)
                functions.append(make_infer(session, first.name))
            triton.bind(
                model_name=name,
                infer_func=functions,
                inputs=[Tensor(name=first.name, dtype=np.float32, shape=(pre.channels, *pre.size))],
                outputs=[Tensor(name=out.name, dtype=np.float32, shape=(len(card.labels),))],
                config=ModelConfig(
                    max_batch_size=args.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=0),
                ),
                strict=True,
            )
        triton.serve()


if __name__ == "__main__":
    main()
