"""The front's live view of the model repository: every ``DLZOO_POLL_SECONDS`` it rescans the
models it runs itself and takes the states of the others from the Inference service, so that it
only hands Inference versions Inference has loaded. ``POST /admin/reload`` does the same at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import anyio

from service.card import ZOO_FILE, ZooProgress
from service.repository import Catalog

log = logging.getLogger("dlzoo.live")
RECHECK_SECONDS = 30.0  # ask the Inference service for its states at least this often


class FrontRepository:
    def __init__(self, catalog: Catalog, inference, poll_seconds: float) -> None:
        self.catalog = catalog
        self.inference = inference  # BentoML's client of the Inference service
        self.poll_seconds = poll_seconds
        self.synced = False  # the front serves once it has the Inference service's states
        self._reloading: asyncio.Task | None = None
        self._asked = -math.inf  # when the Inference service last said its states

    def start(self) -> None:
        asyncio.get_running_loop().create_task(self._follow(), name="dlzoo-follow")

    async def _follow(self) -> None:
        """Sync now (again each second until the Inference service answers), then every poll."""
        while True:
            try:
                await self.sync()
            except Exception as exc:  # the Inference service starting, or one bad scan
                log.warning("repository sync failed (%s); retrying", exc)
            if self.synced and self.poll_seconds == 0:
                return
            await asyncio.sleep(self.poll_seconds if self.synced else 1.0)

    async def sync(self, force: bool = False) -> list[str]:
        """Rescan, and ask the Inference service for its states only when they can matter: a
        change seen here, a version still waiting for it, or ``RECHECK_SECONDS`` since it last
        answered (each internal call costs the Inference process memory: load_tests/FINDINGS.md)."""
        changes = await anyio.to_thread.run_sync(self.catalog.scan)
        stale = time.monotonic() - self._asked > RECHECK_SECONDS
        if force or changes or stale or not self.synced or self.catalog.waiting():
            self.catalog.adopt(await self.inference.to_async.models())
            self._asked = time.monotonic()
        self.synced = True
        return changes

    async def reload(self) -> dict[str, Any]:
        """Rescan here and in the Inference service now; concurrent calls share one rescan."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())
        return await asyncio.shield(self._reloading)

    async def _reload(self) -> dict[str, Any]:
        inference = await self.inference.to_async.reload()
        front = await self.sync(force=True)
        return {"changes": {"inference": inference, "front": front}}

    async def listing(self) -> list[dict[str, Any]]:
        """Every version with its state: this process's own for the models it runs, the Inference
        service's for the others."""
        mine = {
            (e.name, e.version): e.summary()
            for e in self.catalog.entries
            if e.card and self.catalog.runs(e.card.task)
        }
        theirs = await self.inference.to_async.models()
        keys = {(m["name"], m["version"]) for m in theirs}
        extra = [m for key, m in mine.items() if key not in keys]
        return [mine.get((m["name"], m["version"]), m) for m in theirs] + extra + self._training()

    def _training(self) -> list[dict[str, Any]]:
        """The names a running zoo has yet to publish (``training`` first, then ``queued``)."""
        try:
            progress = ZooProgress.model_validate_json((self.catalog.root / ZOO_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [
            {"name": name, "version": None, "status": "training" if i == 0 else "queued"}
            for i, name in enumerate(progress.pending)
        ]
