"""The naive baseline: FastAPI + PyTorch eager, one request at a time, as many first deployments are.

One uvicorn worker; a sync endpoint behind a lock, so one image is decoded, preprocessed and run
through the model at a time (no batching). The preprocessing is the service's own
(``load_tests.baselines.shared.prepare``), so only the serving differs. PyTorch keeps its default
thread count; ``OMP_WAIT_POLICY=PASSIVE`` is set by the benchmark (spinning OpenMP threads on a
shared 2-core machine would measure the contention, not the server).

    python -m load_tests.baselines.naive_server --port 8001 --models models --runs runs --names lenet5,resnet18
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, File, Form, HTTPException, UploadFile  # noqa: E402

from load_tests.baselines.shared import card_of, prepare, top_k  # noqa: E402
from load_tests.torch_models import module_for  # noqa: E402
from service.errors import ClientError  # noqa: E402


def build_app(models: Path, runs: Path, names: list[str]) -> FastAPI:
    loaded = {}
    for name in names:
        card, _ = card_of(models, name)
        module, source = module_for(card, "model", runs)
        loaded[name] = (card, module)
        print(f"naive: {name}: {source}", flush=True)
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/classify")
    def classify(image: UploadFile = File(...), model: str = Form("lenet5"), top_k_: int = Form(5, alias="top_k")):
        if model not in loaded:
            raise HTTPException(404, f"model: {model!r} not served here")
        card, module = loaded[model]
        data = image.file.read()
        with lock:
            try:
                pixels = prepare(data, card)
            except ClientError as exc:
                raise HTTPException(exc.status, str(exc)) from None
            with torch.inference_mode():
                logits = module(torch.from_numpy(pixels)[None]).numpy()
        return top_k(card, logits, top_k_, 1)[0]

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    p.add_argument("--models", type=Path, default=Path("models"), help="model repository (default models)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="checkpoints (default runs)")
    p.add_argument("--names", default="lenet5,resnet18", help="models to serve (default lenet5,resnet18)")
    args = p.parse_args()
    app = build_app(args.models, args.runs, args.names.split(","))
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
