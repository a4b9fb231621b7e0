"""The model repository as the service sees it, live: cards verified, one ONNX Runtime session per
graph, versions picked up, swapped and freed while the service runs.

``models/<name>/<version>/card.json`` is read and validated. A process that runs a model's graphs
also checks every file's SHA-256, opens each graph, compares it with the card's io and warms it up
before the version serves; a process that does not run it checks the card and takes the version's
state from the process that does (:meth:`Catalog.adopt`). :meth:`Catalog.scan` (every
``DLZOO_POLL_SECONDS``) compares a listing of the folders (names, sizes, modification times) with
the last one, so an unchanged repository costs a listing: no file read, no hashing, no session.

States: ``loading`` (not yet served), ``ready``, ``failed`` (with its reason; retried only when its
files change), ``unloaded`` (outside the version policy) and ``draining`` (leaving: it answers the
requests and streams that hold it, and is freed once it has been idle for ``grace`` seconds, long
enough for every process that resolves versions to have seen the change). The version policy
(``latest:N`` or ``all``) counts versions that verified, so a broken new version never evicts a
good one. Nothing that fails replaces a serving version, and a missing, unreadable or empty
repository root unloads nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import runtime as rt
from service.card import CARD_FILE, Card, load_card, parse_model_ref, sha256_file
from service.errors import BadRequest, NotFoundError, ServiceUnavailableError
from service.metrics import MODEL_LOAD_SECONDS, MODEL_LOADS, MODEL_READY

log = logging.getLogger("dlzoo.repository")
SERVING = ("ready", "draining")  # states whose sessions may be in use
Fingerprint = tuple[tuple[str, int, int], ...]  # (file name, size, mtime in ns), sorted


@dataclass(frozen=True)
class VersionPolicy:
    """How many versions of each name stay loaded: the ``latest`` highest that verified, or all."""

    latest: int | None = 2  # None: all

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        text = text.strip().lower()
        if text == "all":
            return cls(None)
        kind, _, n = text.partition(":")
        if kind != "latest" or not n.isdigit() or int(n) < 1:
            raise ValueError(f"a version policy is latest:N (N >= 1) or all; got {text!r}")
        return cls(int(n))

    def __str__(self) -> str:
        return "all" if self.latest is None else f"latest:{self.latest}"


@dataclass(eq=False)  # an entry is itself: compared by identity
class Entry:
    name: str
    version: int
    folder: Path
    card: Card | None = None
    status: str = "loading"  # loading | ready | failed | unloaded | draining
    reason: str | None = None
    sessions: dict[str, Any] = field(default_factory=dict)  # role -> onnxruntime.InferenceSession
    provider: str | None = None
    load_seconds: float | None = None
    fingerprint: Fingerprint | None = None
    active: int = 0  # requests and streams holding it now
    idle_since: float = field(default_factory=time.monotonic)

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
        if self.load_seconds is not None:
            out["load_seconds"] = self.load_seconds
        return out


class Catalog:
    """Every model version under ``root``. With ``runtime=None`` only cards are checked (for
    processes that preprocess but run no graphs); with ``tasks``, only models of those tasks run
    here. ``adopts``: the states of the models this process does not run come from the process
    that runs them (:meth:`adopt`); until then they are ``loading``. Without it they are ``ready``
    once their card validates."""

    def __init__(
        self,
        root: Path,
        runtime: Any | None = None,
        tasks: Iterable[str] | None = None,
        *,
        policy: VersionPolicy = VersionPolicy(),
        grace: float = 0.0,
        adopts: bool = False,
    ):
        self.root = Path(root)
        self.runtime = runtime
        self.tasks = frozenset(tasks) if tasks is not None else None
        self.policy, self.grace, self.adopts = policy, grace, adopts
        self.versions: dict[tuple[str, int], Entry] = {}  # replaced whole by each scan
        self._retired: list[Entry] = []  # replaced copies of a version, draining until idle
        self._scan_lock = threading.Lock()  # one scan, so one load, at a time per process
        self.scan()
        ready = [e.ref for e in self.entries if e.status == "ready"]
        log.info("repository %s: %d ready (%s)", self.root, len(ready), ", ".join(ready))

    @property
    def entries(self) -> list[Entry]:
        return sorted(self.versions.values(), key=lambda e: (e.name, e.version))

    def runs(self, task: str) -> bool:
        """Whether this catalog opens sessions for models of ``task``."""
        return self.runtime is not None and (self.tasks is None or task in self.tasks)

    # --- scanning -------------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Bring the catalog in line with the disk; what changed, one line per version. Works on a
        copy and publishes it whole, so lookups on other threads never see a half-done scan."""
        with self._scan_lock:
            listing = self._listing()
            if listing is None:
                return []
            versions, changes = dict(self.versions), []
            for key, entry in list(versions.items()):
                if key not in listing:
                    changes += self._leave(versions, entry, "deleted from the repository")
            for name in sorted({name for name, _ in listing}):
                kept = 0
                for version in sorted((v for n, v in listing if n == name), reverse=True):
                    folder, fingerprint = listing[(name, version)]
                    wanted = self.policy.latest is None or kept < self.policy.latest
                    changes += self._visit(versions, folder, fingerprint, wanted)
                    kept += versions[(name, version)].status == "ready"
            changes += self._free_idle(versions)
            self.versions = versions
            for line in changes:
                log.info("repository: %s", line)
            return changes

    def _listing(self) -> dict[tuple[str, int], tuple[Path, Fingerprint]] | None:
        """(name, version) -> (folder, fingerprint); None when the root cannot be trusted."""
        try:
            found = {}
            for name in os.scandir(self.root):
                if not name.is_dir() or name.name.startswith(
                    "."
                ):  # dot folders: exports in progress
                    continue
                for v in os.scandir(name.path):
                    if v.is_dir() and v.name.isdigit():
                        files = sorted(
                            (f.name, st.st_size, st.st_mtime_ns)
                            for f in os.scandir(v.path)
                            if f.is_file() and (st := f.stat())
                        )
                        found[(name.name, int(v.name))] = (Path(v.path), tuple(files))
        except OSError as exc:
            log.warning("repository %s unreadable (%s): nothing changes", self.root, exc)
            return None
        if not found and any(e.status in SERVING for e in self.versions.values()):
            log.warning(
                "repository %s lists no version: taken as a glitch, nothing changes", self.root
            )
            return None
        return found

    def _visit(
        self, versions: dict, folder: Path, fingerprint: Fingerprint, wanted: bool
    ) -> list[str]:
        key = (folder.parent.name, int(folder.name))
        entry = versions.get(key)
        changed = entry is None or entry.fingerprint != fingerprint
        if entry is not None and entry.card is not None and not self.runs(entry.card.task):
            if changed:  # another process runs it: this one follows its card
                versions[key] = self._load(folder, fingerprint)
            return []
        if not wanted:
            if entry is not None and entry.status == "ready":
                return self._leave(versions, entry, f"outside the version policy {self.policy}")
            if changed and (entry is None or entry.status not in SERVING):
                versions[key] = self._unloaded(folder, fingerprint)
            return []
        if entry is not None and not changed:
            if entry.status == "draining" and entry.sessions:  # wanted again before it was freed
                entry.status, entry.reason = "ready", None
                return [f"{entry.ref} ready again"]
            if entry.status != "unloaded":
                return []  # ready, or failed with these very files
        fresh = self._load(folder, fingerprint)
        if entry is not None and entry.status in SERVING and fresh.status != "ready":
            # the files of a serving version changed and failed to load: it keeps serving
            entry.fingerprint = fingerprint
            entry.reason = f"its files changed and failed to load ({fresh.reason}); still serving"
            return [f"{entry.ref}: {entry.reason}"]
        versions[key] = fresh
        if entry is not None and entry.status in SERVING:
            entry.status, entry.reason = "draining", "replaced by a new copy of its files"
            self._retired.append(entry)
        return [f"{fresh.ref} {fresh.status}" + (f": {fresh.reason}" if fresh.reason else "")]

    def _leave(self, versions: dict, entry: Entry, why: str) -> list[str]:
        """A version leaves: draining while in use (and for ``grace``) if it has sessions here."""
        key = (entry.name, entry.version)
        if entry.status in SERVING and entry.sessions:
            if entry.status != "draining":
                entry.status, entry.reason = "draining", why
                if entry.active == 0:
                    entry.idle_since = time.monotonic()
                return [f"{entry.ref} draining: {why}"]
            entry.reason = why
            return []
        if why.startswith("deleted"):
            del versions[key]
            return [f"{entry.ref} {why}"]
        if entry.status != "unloaded":
            entry.status, entry.reason = "unloaded", why
        return []

    def _free_idle(self, versions: dict) -> list[str]:
        """Free the sessions of draining versions nobody has held for ``grace`` seconds."""
        now, changes = time.monotonic(), []
        for entry in [*versions.values(), *self._retired]:
            if entry.status != "draining" or entry.active or now - entry.idle_since < self.grace:
                continue
            entry.sessions = {}
            if any(entry is r for r in self._retired):
                self._retired = [r for r in self._retired if r is not entry]
                continue
            MODEL_READY.labels(model=entry.name, version=str(entry.version)).set(0)
            if entry.reason and entry.reason.startswith("deleted"):
                del versions[(entry.name, entry.version)]
                changes.append(f"{entry.ref} freed")
            else:
                entry.status = "unloaded"
                changes.append(f"{entry.ref} unloaded")
        return changes

    def _unloaded(self, folder: Path, fingerprint: Fingerprint) -> Entry:
        entry = Entry(folder.parent.name, int(folder.name), folder, fingerprint=fingerprint)
        entry.status, entry.reason = "unloaded", f"outside the version policy {self.policy}"
        with contextlib.suppress(Exception):  # the card only describes it in the listing
            entry.card = load_card(folder / CARD_FILE)
        return entry

    def _load(self, folder: Path, fingerprint: Fingerprint) -> Entry:
        entry = Entry(folder.parent.name, int(folder.name), folder, fingerprint=fingerprint)
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
                self._open(entry)
            elif self.adopts:
                entry.status = "loading"  # until the process that runs it says
                return entry
            entry.status = "ready"
        except rt.DeviceUnavailable:
            raise  # a GPU that was asked for and not obtained fails start-up loudly
        except Exception as exc:
            entry.status, entry.reason, entry.sessions = "failed", str(exc), {}
            log.error("cannot serve %s: %s", folder, exc)
        entry.load_seconds = round(time.perf_counter() - t0, 3)
        if entry.card is not None and self.runs(entry.card.task):
            labels = {"model": entry.name, "version": str(entry.version)}
            MODEL_LOADS.labels(result=entry.status, **labels).inc()
            if entry.status == "ready":
                MODEL_LOAD_SECONDS.labels(model=entry.name).observe(entry.load_seconds)
                MODEL_READY.labels(**labels).set(1)
        return entry

    def _open(self, entry: Entry) -> None:
        folder, card = entry.folder, entry.card
        for f in card.files.values():
            digest = sha256_file(folder / f.path)
            if digest != f.sha256:
                problem = f"checksum mismatch (card {f.sha256[:12]}…, file {digest[:12]}…)"
                raise ValueError(f"{folder / f.path}: {problem}")
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

    # --- use ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, entry: Entry) -> Iterator[Entry]:
        """Keep ``entry``'s sessions while a request uses it (a draining version is freed only
        once nobody holds it); a stream, which outlives one call, uses acquire and release."""
        self.acquire(entry)
        try:
            yield entry
        finally:
            self.release(entry)

    @staticmethod
    def acquire(entry: Entry) -> None:
        entry.active += 1

    @staticmethod
    def release(entry: Entry) -> None:
        entry.active -= 1
        if entry.active == 0:
            entry.idle_since = time.monotonic()

    def ready_names(self, tasks: Iterable[str] | None = None) -> list[str]:
        tasks = set(tasks) if tasks else None
        return sorted(
            {
                e.name
                for e in self.versions.values()
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
        versions = [e for e in self.versions.values() if e.name == name]
        if not versions:
            raise NotFoundError(f"{field_name}: no model named {name!r}; available: {available()}")
        ready = sorted((e.version for e in versions if e.status == "ready"), reverse=True)
        if version is None:
            if not ready:
                reasons = "; ".join(
                    f"{e.ref}: {e.status} {e.reason or ''}".strip() for e in versions
                )
                raise NotFoundError(
                    f"{field_name}: {name!r} has no version that loaded ({reasons})"
                )
            entry = self.versions[(name, ready[0])]
        else:
            entry = self.versions.get((name, version))
            if entry is None:
                have = ", ".join(str(e.version) for e in sorted(versions, key=lambda e: e.version))
                raise NotFoundError(
                    f"{field_name}: {name!r} has no version {version}; versions: {have}"
                )
            if entry.status != "ready":
                loaded = ", ".join(map(str, ready)) or "none"
                why = "failed to load" if entry.status == "failed" else f"is {entry.status}"
                raise NotFoundError(
                    f"{field_name}: {entry.ref} {why}: {entry.reason}; loaded versions: {loaded}"
                )
        if tasks and entry.card.task not in tasks:
            raise BadRequest(
                f"{field_name}: {entry.name!r} is a {entry.card.task} model; this endpoint "
                f"takes {' or '.join(tasks)} models: {available()}"
            )
        return entry

    def loaded(self, ref: str) -> Entry:
        """The entry ``name@version`` another process resolved, with its graphs open here (ready or
        draining): no version policy and no task check here; a version that failed is a 404."""
        name, version = parse_model_ref(ref)
        entry = self.versions.get((name, version))
        if entry is None:
            raise NotFoundError(f"model: no version {ref} in this process's repository")
        if entry.status not in SERVING:
            raise NotFoundError(f"model: {entry.ref} is {entry.status}: {entry.reason}")
        if not entry.sessions:
            raise ServiceUnavailableError(f"model: {ref} is not loaded in this process")
        return entry

    def waiting(self) -> bool:
        """Whether a version this process does not run is still waiting for its runner's state."""
        return any(
            e.status == "loading" and e.card is not None and not self.runs(e.card.task)
            for e in self.versions.values()
        )

    def adopt(self, listing: list[dict[str, Any]]) -> None:
        """Take the state of each model this process does not run from ``listing`` (the summary of
        the process that runs it): resolving here then never picks a version it has not loaded."""
        states = {(m["name"], m["version"]): m for m in listing}
        for e in self.versions.values():
            theirs = states.get((e.name, e.version))
            if e.card is not None and not self.runs(e.card.task):
                if theirs is None:
                    e.status, e.reason = "loading", None  # it has not seen this version yet
                else:
                    e.status, e.reason = theirs["status"], theirs.get("reason")
                    e.provider, e.load_seconds = theirs.get("provider"), theirs.get("load_seconds")

    def summary(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.entries]
