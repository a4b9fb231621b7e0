"""The playground page and the card pictures it shows: a Starlette app mounted into the front.

- ``GET /ui``: the page (service/ui/: plain HTML, CSS and JavaScript, no build step, nothing
  fetched from elsewhere). It calls only the public endpoints.
- ``GET /models/{name}/{version}/pictures``: the PNG files of a version's folder (loss curves,
  confusion matrix, sample grids: what its card.md shows), as a JSON list of names.
- ``GET /models/{name}/{version}/pictures/{file}``: one of them.

A version's pictures are read from the repository folder, whatever the version's state (a failed
version's curves are still worth a look); names are checked against the card's name pattern, the
version is an integer and files must be in the folder's own listing, so a request never reaches
outside the repository.
Errors are ``{"error": ...}`` with a 404 naming what was not found.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from service.card import NAME_PATTERN
from service.settings import Settings

UI = Path(__file__).parent / "ui"
ASSETS = {  # the page's files: name -> media type (nothing else under /ui is served)
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a new page version shows at once


@functools.cache
def _models_root() -> Path:
    return Settings.from_env().models


def not_found(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=404)


async def page(_: Request) -> Response:
    return FileResponse(UI / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)


async def to_page(_: Request) -> Response:
    """``/ui/`` -> ``/ui`` (relative, so a path prefix stays): the page's links are relative."""
    return RedirectResponse("../ui", status_code=308)


async def asset(request: Request) -> Response:
    name = request.path_params["file"]
    if name not in ASSETS:
        return not_found(f"/ui/{name}: no such file (the page has {', '.join(ASSETS)})")
    return FileResponse(UI / name, media_type=ASSETS[name], headers=NO_CACHE)


def _version_folder(name: str, version: int) -> Path | None:
    if not re.match(NAME_PATTERN, name):
        return None
    folder = _models_root() / name / str(version)
    return folder if folder.is_dir() else None


def _pictures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png") if p.is_file())


async def picture_list(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params["version"]
    folder = _version_folder(name, version)
    if folder is None:
        return not_found(f"model: no version {version} of {name!r} in the repository")
    return JSONResponse(_pictures(folder))


async def picture(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params["version"]
    file = request.path_params["file"]
    folder = _version_folder(name, version)
    if folder is None:
        return not_found(f"model: no version {version} of {name!r} in the repository")
    if file not in _pictures(folder):
        return not_found(f"file: {name}@{version} has no picture {file!r} (see its /pictures)")
    return FileResponse(folder / file, media_type="image/png")


ROUTES = [
    Route("/ui", page, methods=["GET"]),
    Route("/ui/", to_page, methods=["GET"]),
    Route("/ui/{file}", asset, methods=["GET"]),
    Route("/models/{name}/{version:int}/pictures", picture_list, methods=["GET"]),
    Route("/models/{name}/{version:int}/pictures/{file}", picture, methods=["GET"]),
]
APP = Starlette(routes=ROUTES)
