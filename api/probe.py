"""The periodic expert health probe: a background task of the app's lifespan.

Every ``health_interval_s`` seconds (``QSEF_API_HEALTH_INTERVAL_S``; 0 = off) it runs
:func:`experts.health.probe_registry` in a worker thread — remote experts must answer
``GET /v1/models`` within ``health_timeout_s``, local ones must have readable weights — and the
registry records ``ok`` / ``down`` with the time of the check. The first round runs at start-up. The
dispatcher tries experts marked ``down`` last; ``GET /health`` lists every expert's state.

Example:
    >>> probe = HealthProbe(router.registry, router.dispatcher.backend, interval_s=30, timeout_s=2)
    >>> await probe.start()
    >>> ...
    >>> await probe.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.tasks import cancel_and_wait
from experts.health import probe_registry

log = logging.getLogger(__name__)


class HealthProbe:
    """Args:
    registry: the expert registry (read and written each round).
    backend_of: ``spec -> ExpertBackend`` (the dispatcher's cached backends).
    interval_s: seconds between the starts of two rounds.
    timeout_s: budget of each remote check.
    """

    def __init__(self, registry: Any, backend_of: Callable[[Any], Any] | None, *, interval_s: float,
                 timeout_s: float = 2.0):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive (got {interval_s}); 0 means: do not start a probe")
        self.registry = registry
        self.backend_of = backend_of
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.rounds = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expert-health-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_once(self) -> dict[str, tuple[bool, str]]:
        """One round now (in a worker thread); returns ``{name: (ok, detail)}``."""
        results = await run_in_threadpool(probe_registry, self.registry, self.backend_of, timeout_s=self.timeout_s)
        self.rounds += 1
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                results = await self.run_once()
                log.info("expert health probe", extra={"down": sorted(n for n, (ok, _) in results.items() if not ok)})
            except Exception:  # the registry may be briefly unreadable; the next round retries
                log.exception("expert health probe round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))
