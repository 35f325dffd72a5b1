import asyncio
import threading
import time

import pytest

from api.batching import MicroBatcher


def test_concurrent_submits_share_one_call():
    calls = []

    def fn(items):
        calls.append(list(items))
        return [x * 2 for x in items]

    async def main():
        b = MicroBatcher(fn, window_ms=20, concurrency=1)
        await b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return out

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    assert len(calls) == 1 and sorted(calls[0]) == list(range(10))


def test_batches_run_concurrently_and_errors_reach_every_caller():
    active, peak = [0], [0]
    lock = threading.Lock()

    def fn(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        if "boom" in items:
            raise ValueError("bad batch")
        return items

    async def main():
        b = MicroBatcher(fn, window_ms=1, max_batch=2, concurrency=2)
        await b.start()
        ok = await asyncio.gather(*(b.submit(str(i)) for i in range(8)))
        with pytest.raises(ValueError, match="bad batch"):
            await b.submit("boom")
        await b.stop()
        return ok

    assert asyncio.run(main()) == [str(i) for i in range(8)]
    assert peak[0] == 2
