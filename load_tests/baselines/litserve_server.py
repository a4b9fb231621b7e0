"""The peer: LitServe serving the same ONNX graphs with ONNX Runtime and its own batching.

Sessions are opened by the service's own ``service.runtime.open_session`` with
``RuntimeConfig.from_env()`` (same threads, same options), uploads go through the service's
preprocessing, and the answer has the service's shape: only the serving framework differs.
LitServe runs ``decode_request`` (decode + preprocess) in its inference worker, batches up to
``--max-batch`` requests waiting at most ``--batch-timeout`` seconds, and runs one ONNX call per
model in a batch.

    python -m load_tests.baselines.litserve_server --port 8002 --models models --names lenet5,resnet18
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import litserve as ls
import numpy as np
from fastapi import HTTPException

from load_tests.baselines.shared import card_of, prepare, top_k
from service.errors import ClientError
from service.runtime import RuntimeConfig, open_session, warm_up


class Classify(ls.LitAPI):
    def __init__(self, models: Path, names: list[str], **kwargs) -> None:
        super().__init__(api_path="/classify", **kwargs)
        self.models, self.names = models, names

    def setup(self, device) -> None:  # noqa: ANN001 - LitServe passes its device string
        self.entries = {}
        cfg = RuntimeConfig.from_env()
        for name in self.names:
            card, folder = card_of(self.models, name)
            session, _ = open_session(folder / card.files["model"].path, cfg)
            warm_up(session, card.io["model"])
            self.entries[name] = (card, session)

    def decode_request(self, request) -> tuple[str, np.ndarray, int]:  # noqa: ANN001 - starlette FormData
        model = str(request.get("model", "lenet5"))
        if model not in self.entries:
            raise HTTPException(404, f"model: {model!r} not served here")
        card, _ = self.entries[model]
        upload = request["image"]
        data = upload.file.read() if hasattr(upload, "file") else bytes(upload)
        try:
            pixels = prepare(data, card)
        except ClientError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return model, pixels, int(request.get("top_k", 5))

    def batch(self, inputs: list) -> list:
        return inputs  # predict groups the items by model itself

    def predict(self, items) -> list[dict]:  # noqa: ANN001
        if isinstance(items, tuple):  # max_batch_size 1: one item, not a list
            return self._run([items])[0]
        return self._run(items)

    def _run(self, items: list) -> list[dict]:
        out: list[dict | None] = [None] * len(items)
        groups = defaultdict(list)
        for i, (model, _, _) in enumerate(items):
            groups[model].append(i)
        for model, idx in groups.items():
            card, session = self.entries[model]
            x = np.stack([items[i][1] for i in idx])  # (B, C, H, W)
            logits = session.run(None, {card.io["model"].inputs[0].name: x})[0]
            answers = top_k(card, logits, 10, len(idx))
            for row, i in enumerate(idx):
                k = items[i][2]
                out[i] = {**answers[row], "predictions": answers[row]["predictions"][:k]}
        return out

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8002, help="port (default 8002)")
    p.add_argument("--models", type=Path, default=Path("models"), help="model repository (default models)")
    p.add_argument("--names", default="lenet5,resnet18", help="models to serve (default lenet5,resnet18)")
    p.add_argument("--max-batch", type=int, default=64, help="LitServe max_batch_size (default 64)")
    p.add_argument("--batch-timeout", type=float, default=0.005,
                   help="LitServe batch_timeout in seconds (default 0.005)")
    args = p.parse_args()
    api = Classify(args.models, args.names.split(","), max_batch_size=args.max_batch,
                   batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False,
               log_level="warning")


if __name__ == "__main__":
    main()
