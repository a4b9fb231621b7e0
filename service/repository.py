"""The model repository as the service sees it: cards verified, one ONNX Runtime session per graph.

``models/<name>/<version>/card.json`` is read and validated. A process that runs a model's graphs
also checks every file's SHA-256, opens each graph, compares it with the card's io and warms it up;
a process that does not checks the card and that the files exist, and takes the model's state from
the process that runs it (:meth:`Catalog.adopt`). A version that fails any step is kept in the
listing with its reason and never served; everything else keeps serving. The highest ready version
of a name is its default; ``"name@version"`` pins one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import runtime as rt
from service.card import CARD_FILE, Card, load_card, parse_model_ref, sha256_file, version_folders
from service.errors import BadRequest, NotFoundError, ServiceUnavailableError

log = logging.getLogger("dlzoo.catalog")


@dataclass
class Entry:
    name: str
    version: int
    folder: Path
    card: Card | None = None
    status: str = "loading"  # ready | failed
    reason: str | None = None
    sessions: dict[str, Any] = field(default_factory=dict)  # role -> onnxruntime.InferenceSession
    provider: str | None = None
    load_seconds: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.card is not None:
            c = self.card
            out.update(
                task=c.task,
                architecture=c.architecture,
                dataset=c.dataset.name,
                created=c.created,
                metrics=c.metrics,
                inputs={role: [t.model_dump() for t in io.inputs] for role, io in c.io.items()},
            )
            if c.preprocess is not None:
                out["preprocess"] = c.preprocess.model_dump(mode="json")
            if c.labels is not None:
                out["labels"] = c.labels
            if c.latent_dim is not None:
                out["latent_dim"] = c.latent_dim
        if self.provider:
            out["provider"] = self.provider
        return out


class Catalog:
    """All model versions under ``root``. With ``runtime=None`` only cards are checked (for
    processes that preprocess but do not run graphs); with ``tasks``, only models of those tasks are
    run here (the others have their cards checked, and no sessions)."""

    def __init__(self, root: Path, runtime: Any | None = None, tasks: Iterable[str] | None = None):
        self.root = Path(root)
        self.runtime = runtime
        self.tasks = frozenset(tasks) if tasks is not None else None
        self.entries: list[Entry] = []
        if not self.root.is_dir():
            log.error("model folder %s does not exist: no models to serve", self.root)
            return
        for folder in version_folders(self.root):
            self.entries.append(self._load(folder))
        ready = [e.ref for e in self.entries if e.status == "ready"]
        log.info(
            "catalog %s: %d ready (%s), %d failed",
            self.root,
            len(ready),
            ", ".join(ready),
            len(self.entries) - len(ready),
        )

    def _load(self, folder: Path) -> Entry:
        entry = Entry(name=folder.parent.name, version=int(folder.name), folder=folder)
        t0 = time.perf_counter()
        try:
            card = load_card(folder / CARD_FILE)
            entry.card = card
            if (card.name, card.version) != (entry.name, entry.version):
                raise ValueError(f"card says {card.ref} but lives in {entry.name}/{entry.version}")
            for role, f in card.files.items():
                path = folder / f.path
                if not path.is_file():
                    raise ValueError(f"{path}: file of role {role!r} is missing")
            if self.runs(card.task):  # hash what this process runs, then open it
                for f in card.files.values():
                    digest = sha256_file(folder / f.path)
                    if digest != f.sha256:
                        raise ValueError(
                            f"{folder / f.path}: checksum mismatch "
                            f"(card {f.sha256[:12]}…, file {digest[:12]}…)"
                        )
                for role, f in card.files.items():
                    session, provider = rt.open_session(folder / f.path, self.runtime)
                    problems = rt.check_io(session, card.io[role])
                    if problems:
                        raise ValueError(
                            f"{folder / f.path}: graph disagrees with card: {'; '.join(problems)}"
                        )
                    rt.warm_up(session, card.io[role])
                    entry.sessions[role] = session
                    entry.provider = provider
            entry.status = "ready"
        except rt.DeviceUnavailable:
            raise  # a GPU that was asked for and not obtained fails start-up loudly
        except Exception as exc:
            entry.status, entry.reason, entry.sessions = "failed", str(exc), {}
            log.error("skipping %s: %s", folder, exc)
        entry.load_seconds = round(time.perf_counter() - t0, 3)
        return entry

    def runs(self, task: str) -> bool:
        """Whether this catalog opens sessions for models of ``task``."""
        return self.runtime is not None and (self.tasks is None or task in self.tasks)

    # --- lookups --------------------------------------------------------------------------------

    def ready_names(self, tasks: Iterable[str] | None = None) -> list[str]:
        tasks = set(tasks) if tasks else None
        return sorted(
            {
                e.name
                for e in self.entries
                if e.status == "ready" and (tasks is None or e.card.task in tasks)
            }
        )

    def resolve(
        self, ref: str, tasks: Iterable[str] | None = None, field_name: str = "model"
    ) -> Entry:
        """The entry for ``name`` (highest ready version) or ``name@version``; 4xx otherwise."""
        tasks = tuple(tasks) if tasks else None
        # on every request: the list of alternatives is only built for an error message
        available = lambda: ", ".join(self.ready_names(tasks)) or "none"  # noqa: E731
        try:
            name, version = parse_model_ref(ref)
        except ValueError as exc:
            raise BadRequest(f"{field_name}: {exc}; available: {available()}") from None
        versions = [e for e in self.entries if e.name == name]
        if not versions:
            raise NotFoundError(f"{field_name}: no model named {name!r}; available: {available()}")
        if version is None:
            ready = [e for e in versions if e.status == "ready"]
            if not ready:
                reasons = "; ".join(f"{e.ref}: {e.reason}" for e in versions)
                raise NotFoundError(
                    f"{field_name}: {name!r} has no version that loaded ({reasons})"
                )
            entry = max(ready, key=lambda e: e.version)
        else:
            match = [e for e in versions if e.version == version]
            if not match:
                have = ", ".join(str(e.version) for e in versions)
                raise NotFoundError(
                    f"{field_name}: {name!r} has no version {version}; versions: {have}"
                )
            entry = match[0]
            if entry.status != "ready":
                raise NotFoundError(f"{field_name}: {entry.ref} failed to load: {entry.reason}")
        if tasks and entry.card.task not in tasks:
            raise BadRequest(
                f"{field_name}: {entry.name!r} is a {entry.card.task} model; this endpoint "
                f"takes {' or '.join(tasks)} models: {available()}"
            )
        return entry

    def loaded(self, ref: str) -> Entry:
        """The entry ``name@version`` another process resolved, with its graphs open here.

        The caller chose the version (from a listing that agrees with this process's states), so
        no version policy and no task check here; a version that failed here is a 404."""
        entry = next((e for e in self.entries if e.ref == ref), None)
        if entry is None:
            raise NotFoundError(f"model: no version {ref} in this process's repository")
        if entry.status != "ready":
            raise NotFoundError(f"model: {entry.ref} failed to load: {entry.reason}")
        if not entry.sessions:
            raise ServiceUnavailableError(f"model: {ref} is not loaded in this process")
        return entry

    def adopt(self, listing: list[dict[str, Any]]) -> None:
        """Take the state of each model this process does not run from ``listing`` (the summary of
        the process that runs it): resolving here then never picks a version that failed there."""
        states = {(m["name"], m["version"]): m for m in listing}
        for e in self.entries:
            theirs = states.get((e.name, e.version))
            if e.status == "ready" and not self.runs(e.card.task) and theirs is not None:
                e.status, e.reason = theirs["status"], theirs.get("reason")
                e.provider = theirs.get("provider")

    def summary(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.entries]
