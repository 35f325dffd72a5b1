"""Micro-batching: concurrent requests share one call of a batch function.

Requests put their item on a queue and await a future. One worker task takes the first item, keeps
collecting for ``window_ms`` (or until ``max_batch`` items), runs ``fn(items)`` once in a worker
thread — one thread hop per batch, not per request — and hands each caller its result. Up to
``concurrency`` batches run at once, and while every slot is busy the queue keeps filling, so
batches grow with load. For ``/v1/score`` this turns N concurrent requests into one encoder forward
pass and one ``(N, E)`` scoring pass.

The window closes early once a batch is as large as the previous one: under steady load the same
callers come back after each batch (a closed loop), and waiting out the window would only leave the
CPU idle. Items already queued are still taken along (up to ``max_batch``), so batches can grow.

Example:
    >>> batcher = MicroBatcher(lambda texts: [len(t) for t in texts], window_ms=5)
    >>> await batcher.start()
    >>> await asyncio.gather(batcher.submit("a"), batcher.submit("bb"))
    [1, 2]
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class MicroBatcher:
    """Args:
    fn: ``items -> results`` (same length, same order); runs in a thread.
    window_ms: the longest wait for more items after the first (ends early once the batch is as large
        as the previous one).
    max_batch: most items per call.
    concurrency: batches computed at the same time.
    on_batch: called with each batch size (metrics).
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, window_ms: float = 5.0, max_batch: int = 64,
                 concurrency: int = 2, on_batch: Callable[[int], None] | None = None):
        self.fn = fn
        self.concurrency = max(1, concurrency)
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Task] = set()
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0
        self._expect = max_batch  # size of the previous batch: enough to close the window early

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for t in list(self._inflight):
            t.cancel()

    async def submit(self, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("micro-batcher not started")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None and self._slots is not None
        while True:
            await self._slots.acquire()  # wait for a free slot first: meanwhile the queue fills up
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            self._expect = max(1, len(batch))
            if not live:
                self._slots.release()
                continue
            task = asyncio.create_task(self._process(live))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        """The first queued item, then whatever arrives within the window (up to ``max_batch``), or
        until the batch is as large as the previous one."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.window
        while len(batch) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0 or len(batch) >= self._expect:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                continue
        return batch

    async def _process(self, live: list[tuple[Any, asyncio.Future]]) -> None:
        assert self._slots is not None
        try:
            self.batches += 1
            self.items += len(live)
            if self.on_batch:
                self.on_batch(len(live))
            results = await run_in_threadpool(self.fn, [item for item, _ in live])
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        except Exception as exc:  # every caller of the batch gets the error
            log.exception("batch call failed", extra={"size": len(live)})
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._slots.release()
