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


def test_window_closes_early_once_the_previous_batch_size_is_reached():
    """Closed loop: the same 4 callers come back; the second batch must not wait out the 300 ms window."""
    sizes = []

    def fn(items):
        sizes.append(len(items))
        return items

    async def main():
        b = MicroBatcher(fn, window_ms=300, concurrency=1)
        await b.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(i) for i in range(4)))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(i) for i in range(4)))
        second = time.perf_counter() - t0
        await asyncio.gather(*(b.submit(i) for i in range(6)))  # more callers: the batch still grows
        await b.stop()
        return first, second

    first, second = asyncio.run(main())
    assert sizes[:2] == [4, 4] and sum(sizes[2:]) == 6 and max(sizes[2:]) >= 4
    assert first >= 0.3 and second < 0.15


@pytest.mark.parametrize("ablate", [(), ("d_kg", "c_sparsity")])
def test_batched_bodies_equal_per_text_scores(tmp_path, ablate):
    """The bodies of one batched pass == each text's typed scores from the engine (fields, order, P)."""
    from fakes import build_fake_router

    from api.routes.score import score_texts_fn
    from api.schemas import ScorePublic

    r = build_fake_router(tmp_path)
    r.scorer.engine.ablate = set(ablate)
    texts = ["Can my landlord evict me?", "How do I sort a list in Python?", "Is ibuprofen safe with a fever?"]
    bodies = [ScorePublic.model_validate_json(b) for b in score_texts_fn(r)(texts)]
    for text, body in zip(texts, bodies, strict=True):
        alone = r.scorer.score([text]).scores(0)
        assert body.batch_size == 3 and body.text == text and body.flags == alone.flags
        assert [e.expert for e in body.experts] == [e.expert for e in alone.experts]
        assert [e.P for e in body.experts] == pytest.approx([e.P for e in alone.experts], rel=1e-5)
        assert sum(e.P for e in body.experts) == pytest.approx(1.0)
        assert all((e.D_kg is None) == ("d_kg" in ablate) for e in body.experts)


def test_score_bodies_are_valid_json_of_the_public_schema(tmp_path):
    import json

    from fakes import build_fake_router

    from api.routes.score import score_texts_fn
    from api.schemas import ScorePublic

    bodies = score_texts_fn(build_fake_router(tmp_path))(["What is a tort?", "What is a mutex?"])
    parsed = [ScorePublic.model_validate(json.loads(b)) for b in bodies]
    assert [p.text for p in parsed] == ["What is a tort?", "What is a mutex?"]
    assert [e.rank for e in parsed[0].experts] == [1, 2, 3, 4, 5]
