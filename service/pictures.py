"""The VAE and GAN endpoints' answers: a PNG of our own bytes, or JSON arrays.

A starlette Response passes through BentoML unchanged; a returned PIL image it would re-encode.
"""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
from starlette.responses import JSONResponse, Response

from service import latent


def meta(out: dict[str, Any]) -> dict[str, Any]:
    return {"model": out["model"], "version": out["version"], "provider": out["provider"]}


async def png(out: dict[str, Any], columns: int | None, scale: int) -> Response:
    """A grid of ``out["images"]``; the seeds and the model in headers."""
    data = await anyio.to_thread.run_sync(latent.to_png, out["images"], columns, scale)
    headers = {f"X-{k.replace('_', '-').title()}": str(v) for k, v in out["seeds"].items()}
    headers["X-Model"] = f"{out['model']}@{out['version']}"
    return Response(data, media_type="image/png", headers=headers)


def arrays(out: dict[str, Any], **fields: Any) -> JSONResponse:
    """Images and latents as nested lists, with the model and ``fields``."""
    images = {"images": latent.to_lists(out["images"]), "latents": out["latents"].tolist()}
    return JSONResponse({**meta(out), **fields, **images})


def reconstruction(out: dict[str, Any], pixels: np.ndarray) -> JSONResponse:
    """A VAE's posterior for one upload (``pixels`` as the model saw it) and its reconstruction."""
    extra = out["extra"]
    return JSONResponse(
        {
            **meta(out),
            "mean": extra["mean"][0].tolist(),
            "logvar": extra["logvar"][0].tolist(),
            "reconstruction_error": {"mse": float(extra["mse"][0])},
            "input": latent.to_lists(pixels[None])[0],
            "reconstruction": latent.to_lists(out["images"])[0],
        }
    )
