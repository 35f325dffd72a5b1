"""The feedback store on both backends (SQLite file, PostgreSQL schema): durability, one rating per
outcome, idempotent retries, several writers at once, and what a lost database looks like."""

import threading

import numpy as np
import pytest

from core.db import DatabaseUnavailableError
from router.feedback import (
    FeedbackAlreadyRatedError,
    FeedbackKeyReusedError,
    FeedbackNotFoundError,
    FeedbackStore,
)

V = np.ones(8, dtype=np.float32) / np.sqrt(8)


def _record(fb, rid="r", index=0, expert="law", ok=True):
    return fb.record(request_id=rid, index=index, subtask="x", expert=expert, te=0.3, latency_ms=1.0, ok=ok,
                     embedding=V)


def test_feedback_store_durable(store_target):
    fb = FeedbackStore(store_target("feedback"))
    _record(fb)
    assert fb.error_rate("law", V) is None  # unrated success is no evidence
    assert fb.rate("r", rating=0.0) == 1
    again = FeedbackStore(store_target("feedback"))  # reopened: durable
    assert again.error_rate("law", V) > 0.5
    with pytest.raises(FeedbackNotFoundError, match="no routed outcome"):
        again.rate("nope", rating=1.0)
    with pytest.raises(ValueError):
        again.rate("r", rating=2.0)
    assert again.stats()["law"]["rated"] == 1 and again.stats()["law"]["failed"] == 0


def test_a_rating_counts_once(store_target):
    fb = FeedbackStore(store_target("feedback"))
    for i, expert in enumerate(("law", "finance")):
        _record(fb, index=i, expert=expert)
    assert fb.rate("r", rating=0.0, expert="law") == 1
    with pytest.raises(FeedbackAlreadyRatedError, match="counts once"):
        fb.rate("r", rating=1.0, expert="law")
    assert fb.rate("r", rating=1.0) == 1  # only the unrated finance outcome
    with pytest.raises(FeedbackAlreadyRatedError):
        fb.rate("r", rating=0.0)
    assert {o["expert"]: o["rating"] for o in fb.outcomes("r")} == {"law": 0.0, "finance": 1.0}


def test_a_retried_rating_with_its_key_answers_the_first_result(store_target):
    fb = FeedbackStore(store_target("feedback"))
    for i in range(3):
        _record(fb, index=i)
    assert fb.rate("r", rating=0.0, idempotency_key="k1") == 3
    assert fb.rate("r", rating=0.0, idempotency_key="k1") == 3  # the retry: same answer, nothing changes
    with pytest.raises(FeedbackKeyReusedError, match="different rating"):
        fb.rate("r", rating=1.0, idempotency_key="k1")
    with pytest.raises(FeedbackAlreadyRatedError):
        fb.rate("r", rating=0.0, idempotency_key="k2")  # a new key is a new rating
    assert fb.count(rated=True) == 3


def test_a_failed_rating_does_not_burn_its_key(store_target):
    fb = FeedbackStore(store_target("feedback"))
    with pytest.raises(FeedbackNotFoundError):
        fb.rate("r", rating=1.0, idempotency_key="k")
    _record(fb)  # the outcome lands later (another worker was still writing it)
    assert fb.rate("r", rating=1.0, idempotency_key="k") == 1


def test_concurrent_writers_lose_nothing(store_target):
    """Four "workers" (store objects on one database), each on two threads, record 25 outcomes a thread
    and rate them with retried idempotent calls; every row and every rating is there exactly once."""
    stores = [FeedbackStore(store_target("feedback")) for _ in range(4)]
    errors = []

    def work(fb, t):
        try:
            for i in range(25):
                rid = f"w{t}-{i}"
                _record(fb, rid=rid)
                for _ in range(2):  # the client retries: the key makes it count once
                    assert fb.rate(rid, rating=1.0, idempotency_key=f"key-{rid}") == 1
        except Exception as exc:  # pragma: no cover - asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(stores[t % 4], t)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stores[0].count() == 200 and stores[0].count(rated=True) == 200


def test_one_key_sent_to_two_workers_at_once_rates_once(store_target):
    stores = [FeedbackStore(store_target("feedback")) for _ in range(2)]
    for i in range(20):
        _record(stores[0], rid=f"r{i}")
    results, errors = [], []
    barrier = threading.Barrier(2)

    def rate(fb):
        barrier.wait()
        for i in range(20):
            try:
                results.append(fb.rate(f"r{i}", rating=0.0, idempotency_key=f"k{i}"))
            except Exception as exc:  # pragma: no cover
                errors.append(repr(exc))

    threads = [threading.Thread(target=rate, args=(fb,)) for fb in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [1] * 40


def test_another_workers_ratings_reach_this_workers_history(store_target):
    mine = FeedbackStore(store_target("feedback"), refresh_s=0.0)
    theirs = FeedbackStore(store_target("feedback"))
    _record(theirs)
    assert mine.error_rate("law", V) is None
    theirs.rate("r", rating=0.0)
    assert mine.error_rate("law", V) > 0.5  # read through the shared history_version counter


def test_an_unreachable_database_is_one_clear_error():
    from core.pglocal import _free_port

    url = f"postgresql://qsef@127.0.0.1:{_free_port()}/qsef"
    with pytest.raises(DatabaseUnavailableError, match="QSEF_DATABASE_URL=postgresql") as info:
        FeedbackStore(url)
    assert "fix QSEF_DATABASE_URL" in str(info.value) and "\n" not in str(info.value)


def test_a_database_lost_mid_run_fails_clearly_and_recovers(pg_cluster):
    """Terminating every connection (what a restart or failover does) fails the next call with
    DatabaseUnavailableError or succeeds on a fresh connection — never half-written; later calls work."""
    fb = FeedbackStore(pg_cluster.create_schema("lost"))
    _record(fb)
    pg_cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE pid <> pg_backend_pid() AND datname = 'postgres'")
    _record(fb, rid="after")  # the pool's pre-ping replaces the dead connection
    assert fb.count() == 2
