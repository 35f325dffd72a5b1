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
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
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
    lock_path: the host-wide prober lock (several workers); ``None``: this process always probes.
    on_tick: run in every worker each round, before the probe (exceptions are logged).
    """

    def __init__(self, registry: Any, backend_of: Callable[[Any], Any] | None, *, interval_s: float,
                 timeout_s: float = 2.0, lock_path: Path | None = None, on_tick: Callable[[], Any] | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive (got {interval_s}); 0 means: do not start a probe")
        self.registry = registry
        self.backend_of = backend_of
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.rounds = 0
        self.lock_path = lock_path
        self.on_tick = on_tick
        self._lock_fd: int | None = None
        self._task: asyncio.Task | None = None

    @property
    def is_prober(self) -> bool:
        """Whether this process probes (it holds the host's lock, or there is no lock)."""
        return self.lock_path is None or self._lock_fd is not None

    def _elect(self) -> bool:
        """Take the host's prober lock if it is free; True when this process holds it."""
        if self.is_prober:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another worker probes
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        log.info("this worker runs the host's expert health probe", extra={"pid": os.getpid()})
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expert-health-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def run_once(self) -> dict[str, tuple[bool, str]]:
        """One round now (in a worker thread); returns ``{name: (ok, detail)}``."""
        results = await run_in_threadpool(probe_registry, self.registry, self.backend_of, timeout_s=self.timeout_s)
        self.rounds += 1
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if self.on_tick is not None:
                try:
                    await run_in_threadpool(self.on_tick)
                except Exception as exc:  # the database may be briefly unreachable; the next round retries
                    log.warning("registry sync failed", extra={"error": str(exc)[:300]})
            try:
                if self._elect():
                    results = await self.run_once()
                    log.info("expert health probe",
                             extra={"down": sorted(n for n, (ok, _) in results.items() if not ok)})
            except Exception:  # the registry may be briefly unreadable; the next round retries
                log.exception("expert health probe round failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))
