"""The judge of generated digits: the zoo's ``lenet5`` (trained before the generative models).

Samples (batch, 1, 28, 28) in [0, 1] are resized 28 -> 32 as the data loader resizes (bilinear,
``align_corners=False``) and classified by the highest ``models/lenet5`` version with ONNX Runtime:

- ``sample_is``: classifier Inception Score, ``exp(E_x KL(p(y|x) || p(y)))`` over all samples (one
  split; Salimans et al. 2016 with LeNet in place of Inception),
- ``sample_classes``: how many of the ten digits are some sample's top class,
- ``sample_confidence``: the mean top-class probability,
- ``sample_fid``: the Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the
  samples' and the held-out real digits' features in lenet5's penultimate layer (F6, the input of
  its output layer: 84 units). Those come from lenet5 rebuilt from ``runs/lenet5/best.pt``, which
  is checked to give the ONNX graph's logits; without that checkpoint the logits are the features
  (the card says which: ``sample_fid_features``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from service.card import load_card, versions
from training.loop import load_checkpoint
from training.tasks import rebuild

log = logging.getLogger("training")

JUDGE = "lenet5"
JUDGED_SAMPLES = 1000


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for class probabilities (N, K)."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between features (N, D) and (M, D).

    Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD
    matrix.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(cross, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


class Judge:
    """lenet5 as the sample-quality judge: ONNX Runtime for the classes, torch for its F6
    features."""

    def __init__(
        self,
        ref: str,
        session: ort.InferenceSession,
        size: tuple[int, int],
        features: nn.Module | None,
        feature_note: str,
    ):
        self.ref, self.session, self.size = ref, session, size
        self.features_model, self.feature_note = features, feature_note

    @classmethod
    def load(cls, models_root: Path, runs_root: Path) -> Judge | None:
        """The highest ``lenet5`` version under ``models_root``; None (with a warning) if there is
        none."""
        found = versions(Path(models_root), JUDGE)
        if not found:
            log.warning(
                "no %s under %s: generative samples are not judged (train %s first; the zoo does)",
                JUDGE,
                models_root,
                JUDGE,
            )
            return None
        folder = Path(models_root) / JUDGE / str(found[-1])
        card = load_card(folder / "card.json")
        session = ort.InferenceSession(
            str(folder / card.files["model"].path), providers=["CPUExecutionProvider"]
        )
        judge = cls(card.ref, session, tuple(card.preprocess.size), None, "lenet5 logits (10)")
        ckpt_path = Path(runs_root) / JUDGE / "best.pt"
        if ckpt_path.exists():
            net = rebuild(load_checkpoint(ckpt_path))
            probe = torch.rand(16, 1, *judge.size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                expected = net(probe).numpy()
            got = session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0]
            if np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, float(np.max(np.abs(expected)))):
                judge.features_model = net
                judge.feature_note = "lenet5 penultimate layer (F6, 84 units)"
            else:
                log.warning(
                    "%s is not the model of %s: Fréchet distance on lenet5's logits",
                    ckpt_path,
                    card.ref,
                )
        else:
            log.warning(
                "no %s: Fréchet distance on lenet5's logits, not its penultimate layer", ckpt_path
            )
        return judge

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> the judge's input size, resized as the data loader does."""
        if tuple(images.shape[-2:]) == self.size:
            return images
        shrink = self.size[0] < images.shape[-2] or self.size[1] < images.shape[-1]
        return F.interpolate(
            images, size=self.size, mode="bilinear", align_corners=False, antialias=shrink
        ).clamp(0.0, 1.0)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        x = self.prepare(images).numpy().astype(np.float32)
        logits = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        x = self.prepare(images)
        if self.features_model is None:
            return self.session.run(None, {self.session.get_inputs()[0].name: x.numpy()})[0]
        captured: list[torch.Tensor] = []
        last = [m for m in self.features_model.modules() if isinstance(m, nn.Linear)][-1]
        hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.features_model(x)
        finally:
            hook.remove()
        return captured[0].numpy()  # (N, 84): the output layer's input

    def fid(self, samples: torch.Tensor, real: torch.Tensor) -> float:
        return frechet_distance(self.features(samples), self.features(real))

    def score(self, samples: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
        probs = self.probabilities(samples)
        return {
            "sample_is": round(inception_score(probs), 3),
            "sample_fid": round(self.fid(samples, real), 2),
            "sample_classes": int(len(np.unique(probs.argmax(axis=1)))),
            "sample_confidence": round(float(probs.max(axis=1).mean()), 4),
            "sample_count": len(samples),
            "sample_judge": self.ref,
            "sample_fid_features": self.feature_note,
            "sample_fid_reference": f"{len(real)} held-out test digits",
            **self.references(real),
        }

    def references(self, real: torch.Tensor) -> dict[str, float]:
        """For scale, the same judge on held-out real digits and on uniform noise (as many as
        real)."""
        half = len(real) // 2
        noise = torch.rand(len(real), *real.shape[1:], generator=torch.Generator().manual_seed(0))
        return {
            "real_is": round(inception_score(self.probabilities(real)), 3),
            "real_fid_halves": round(self.fid(real[:half], real[half:]), 2),
            "noise_fid": round(self.fid(noise, real), 2),
        }


def unjudged() -> dict[str, Any]:
    return {
        "sample_judge": None,
        "sample_note": f"no {JUDGE} under the models root: samples not judged",
    }


def headline(judged: dict[str, Any]) -> dict[str, Any]:
    """The scores worth a log line."""
    keys = ("sample_is", "sample_fid", "sample_classes", "sample_confidence")
    return {k: v for k, v in judged.items() if k in keys}
