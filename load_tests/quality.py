"""Quality through HTTP, on the models ``make models`` builds (issues #5 and #6).

- samples: 200 images from ``POST /sample`` (vae, gan) classified by ``lenet5`` through
  ``POST /classify``: mean top probability >= 0.8 and all 10 digits present.
- interpolation: ``POST /interpolate`` (slerp, 8 steps) frames change smoothly: the mean absolute
  difference between neighbouring frames is below the difference between the endpoints.
- dates: held-out dates (``training.data.dates``, the seq2seq card's seed: days never trained on)
  in every format through ``POST /translate``: per-format exact match >= 99%.

An endpoint that answers 404 for its route makes its part "not available" instead of failing.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

log = logging.getLogger("bench.quality")

SAMPLE_TARGET = {"mean_top_probability": 0.8, "digits_covered": 10}
DATES_TARGET = 0.99


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.clip(np.asarray(array), 0, 1) * 255).astype(np.uint8), "L").save(
        buf, "PNG"
    )
    return buf.getvalue()


def _not_available(resp: httpx.Response) -> dict:
    return {"available": False, "reason": f"HTTP {resp.status_code}: {resp.text[:200]}"}


def samples(
    client: httpx.Client,
    model: str,
    total: int = 200,
    per_request: int = 50,
    judge: str = "lenet5",
    threads: int = 4,
) -> dict:
    images = []
    for seed in range((total + per_request - 1) // per_request):
        count = min(per_request, total - len(images))
        resp = client.post(
            "/sample", json={"model": model, "count": count, "seed": seed, "format": "json"}
        )
        if resp.status_code != 200:
            return _not_available(resp)
        images += resp.json()["images"]

    def top(img) -> tuple[int, float]:
        r = client.post(
            "/classify",
            files={"image": ("s.png", _png(img), "image/png")},
            data={"model": judge, "top_k": "1"},
        )
        r.raise_for_status()
        best = r.json()["predictions"][0]
        return int(best["index"]), float(best["probability"])

    with ThreadPoolExecutor(threads) as pool:
        tops = list(pool.map(top, images))
    counts = np.bincount([c for c, _ in tops], minlength=10)
    confidence = float(np.mean([p for _, p in tops]))
    covered = int((counts > 0).sum())
    out = {
        "available": True,
        "model": model,
        "judge": judge,
        "samples": len(tops),
        "mean_top_probability": confidence,
        "digits_covered": covered,
        "class_counts": counts.tolist(),
        "meets_target": confidence >= SAMPLE_TARGET["mean_top_probability"]
        and covered >= SAMPLE_TARGET["digits_covered"],
    }
    log.info("quality %s: mean top probability %.3f, %d digits", model, confidence, covered)
    return out


def interpolation(client: httpx.Client, model: str, pairs: int = 10, steps: int = 8) -> dict:
    rows = []
    for i in range(pairs):
        resp = client.post(
            "/interpolate",
            json={
                "model": model,
                "seed_from": 100 + 2 * i,
                "seed_to": 101 + 2 * i,
                "steps": steps,
                "method": "slerp",
                "format": "json",
            },
        )
        if resp.status_code != 200:
            return _not_available(resp)
        frames = np.asarray(resp.json()["images"], dtype=np.float64)  # (steps, H, W)
        neighbours = np.abs(np.diff(frames, axis=0)).mean(axis=tuple(range(1, frames.ndim)))
        endpoints = float(np.abs(frames[-1] - frames[0]).mean())
        rows.append(
            {
                "mean_neighbour": float(neighbours.mean()),
                "max_neighbour": float(neighbours.max()),
                "endpoints": endpoints,
            }
        )
    smooth = sum(r["mean_neighbour"] < r["endpoints"] for r in rows)
    strict = sum(r["max_neighbour"] < r["endpoints"] for r in rows)
    return {
        "available": True,
        "model": model,
        "pairs": pairs,
        "steps": steps,
        "mean_neighbour_mad": float(np.mean([r["mean_neighbour"] for r in rows])),
        "max_neighbour_mad": float(np.max([r["max_neighbour"] for r in rows])),
        "mean_endpoint_mad": float(np.mean([r["endpoints"] for r in rows])),
        "pairs_smooth": smooth,
        "pairs_max_step_below_endpoints": strict,
        "meets_target": smooth == pairs,
    }


def dates(
    client: httpx.Client,
    model: str = "seq2seq",
    per_format: int = 50,
    seed: int | None = None,
    threads: int = 4,
) -> dict:
    """Held-out dates, ``per_format`` in each format, one request each (greedy: beam_width 1)."""
    from training.data import dates as dd

    probe = client.post(
        "/translate",
        json={
            "model": model,
            "text": "3 March 2021",
            "beam_width": 1,
            "num_return": 1,
            "max_length": 16,
        },
    )
    if probe.status_code in (404, 405):
        return _not_available(probe)
    if seed is None:
        try:
            card = next(m for m in client.get("/models").json() if m["name"] == model)
            seed = int((card.get("training") or {}).get("seed", 0))
        except Exception:
            seed = 0
    data = dd.load_dates(seed, n_train=1, n_val=1, n_test=per_format * len(dd.FORMATS))
    pairs = list(zip(data.test.sources, data.test.targets, data.test.formats, strict=True))

    def translate(pair) -> tuple[str, bool, str]:
        source, target, fmt = pair
        r = client.post(
            "/translate",
            json={
                "model": model,
                "text": source,
                "beam_width": 1,
                "num_return": 1,
                "max_length": dd.TARGET_LEN + 2,
            },
        )
        if r.status_code != 200:
            return fmt, False, f"HTTP {r.status_code}"
        output = r.json().get("output")
        return fmt, output == target, output

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(translate, pairs))
    per: dict[str, list[bool]] = {}
    errors = []
    for (source, target, _), (fmt, ok, output) in zip(pairs, results, strict=True):
        per.setdefault(fmt, []).append(ok)
        if not ok and len(errors) < 10:
            errors.append({"source": source, "target": target, "output": output})
    accuracy = {f: float(np.mean(v)) for f, v in per.items()}
    worst = min(accuracy.values()) if accuracy else 0.0
    return {
        "available": True,
        "model": model,
        "seed": seed,
        "per_format": per_format,
        "accuracy_by_format": accuracy,
        "overall": float(np.mean([ok for _, ok, _ in results])),
        "worst_format_accuracy": worst,
        "errors": errors,
        "meets_target": worst >= DATES_TARGET,
    }


def card_seed(models, name: str = "seq2seq") -> int | None:
    """The training seed in the local card: it fixes which calendar days were held out."""
    from load_tests.common import latest_version
    from service.card import load_card

    folder = latest_version(models, name) if models else None
    if folder is None:
        return None
    return int(load_card(folder / "card.json").training.get("seed", 0))


def quality_section(url: str, quick: bool, models=None) -> dict:
    out: dict = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for model in ("vae", "gan"):
            for part, fn in (("samples", samples), ("interpolation", interpolation)):
                try:
                    out[f"{model}_{part}"] = fn(client, model)
                except Exception as exc:
                    log.exception("quality %s %s", model, part)
                    out[f"{model}_{part}"] = {
                        "available": False,
                        "reason": f"{type(exc).__name__}: {exc}",
                    }
        try:
            out["dates"] = dates(client, per_format=20 if quick else 100, seed=card_seed(models))
        except Exception as exc:
            log.exception("quality dates")
            out["dates"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return out
