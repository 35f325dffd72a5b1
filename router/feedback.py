"""Durable feedback: every routed sub-task's outcome, plus user ratings, in SQLite or PostgreSQL.

Each dispatched sub-task is stored with its expert, TE, latency, success and the sub-task's
embedding. A later rating (``POST /v1/feedback``) marks it correct or not. The store is also a
:class:`qsef.history.HistoryProvider`: ``error_rate(expert, embedding)`` is the similarity-weighted
error of that expert on the nearest past sub-tasks, which QSEF's ``C_model`` reads.

An outcome counts as an error when it was rated below 0.5, or — unrated — when the expert failed
(timeout or exception). Unrated successes are not evidence of correctness and are left out.

Each outcome is rated at most once: a second rating of the same outcomes is refused
(:class:`FeedbackAlreadyRatedError`, HTTP 409), so one rating per request id and expert counts once.
A client that retries a rating (a timeout, a worker killed mid-request) sends an idempotency key: the
retry answers the first result and adds nothing.

Where it lives: a SQLite file by default, or the shared PostgreSQL database with
``QSEF_DATABASE_URL`` (:mod:`core.db`), so every router worker records into and learns from one log.

Example:
    >>> fb = FeedbackStore(tmp_path / "feedback.sqlite")
    >>> oid = fb.record(request_id="r1", index=0, subtask="What is GDP?", expert="finance",
    ...                 te=0.4, latency_ms=812.0, ok=True, embedding=vec)
    >>> fb.rate("r1", rating=0.0)        # the user says the answer was wrong
    >>> fb.error_rate("finance", vec)    # now > 0.5
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import text

from core.db import Database
from qsef.history import InMemoryHistory

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["FeedbackAlreadyRatedError", "FeedbackKeyReusedError", "FeedbackNotFoundError", "FeedbackStore",
           "feedback_from_settings"]

# SQLite's scripts; _PG_SCHEMA gives the same layout on PostgreSQL step for step. Never edit a shipped step.
_SCHEMA = [
    """
    CREATE TABLE outcomes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        subtask TEXT NOT NULL,
        expert TEXT NOT NULL,
        te REAL,
        latency_ms REAL,
        ok INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        embedding BLOB,
        rating REAL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        rated_at REAL
    );
    CREATE INDEX outcomes_request ON outcomes(request_id, idx);
    CREATE INDEX outcomes_expert ON outcomes(expert)
    """,
    # idempotency keys of ratings (a retried POST /v1/feedback answers the first result) and a change
    # counter of the evidence C_model reads (ratings, failures), which other workers poll
    """
    CREATE TABLE rating_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        rated INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE history_version (v INTEGER NOT NULL);
    INSERT INTO history_version (v) VALUES (0)
    """,
]

_PG_SCHEMA = [
    """
    CREATE TABLE outcomes (
        id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        subtask TEXT NOT NULL,
        expert TEXT NOT NULL,
        te DOUBLE PRECISION,
        latency_ms DOUBLE PRECISION,
        ok INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        embedding BYTEA,
        rating DOUBLE PRECISION,
        comment TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        rated_at DOUBLE PRECISION
    );
    CREATE INDEX outcomes_request ON outcomes(request_id, idx);
    CREATE INDEX outcomes_expert ON outcomes(expert)
    """,
    """
    CREATE TABLE rating_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        rated INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE history_version (v BIGINT NOT NULL);
    INSERT INTO history_version (v) VALUES (0)
    """,
]

_BUMP = "UPDATE history_version SET v = v + 1"


class FeedbackNotFoundError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class FeedbackAlreadyRatedError(ValueError):
    """Every matching outcome already carries a rating; a rating counts once."""


class FeedbackKeyReusedError(ValueError):
    """An idempotency key came back with a different rating than the one it was first used for."""


class FeedbackStore:
    """Feedback store (SQLite in WAL mode, or the shared PostgreSQL database) that doubles as QSEF's
    history provider.

    Several processes may write at once: every call is one transaction, and :meth:`rate` with an
    ``idempotency_key`` applies a retried rating once. The in-memory history that ``C_model`` reads is
    rebuilt when this process changed the evidence, or — checked at most every ``refresh_s`` seconds —
    when the ``history_version`` counter shows that another process did.

    Args:
        target: a SQLite file, a ``postgresql://`` URL, or a :class:`core.db.Database`.
        k: nearest past sub-tasks per expert used by :meth:`error_rate`.
        refresh_s: how stale the history may be with respect to other processes' writes.
    """

    def __init__(self, target: str | Path | Database, *, k: int = 10, refresh_s: float = 1.0):
        self.db = target if isinstance(target, Database) else Database(target)
        self.path = self.db.path  # None on PostgreSQL
        self.k = k
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._history: InMemoryHistory | None = None
        self._history_version: int | None = None
        self._checked_at = 0.0
        self.db.migrate({"sqlite": _SCHEMA, "postgresql": _PG_SCHEMA}, store="feedback")

    def describe(self) -> str:
        return self.db.describe()

    def close(self) -> None:
        self.db.close()

    def record(self, *, request_id: str, index: int, subtask: str, expert: str, te: float | None,
               latency_ms: float, ok: bool, error: str = "", embedding: np.ndarray | None = None) -> int:
        """Store one dispatched sub-task (committed before it returns); returns its outcome id."""
        blob = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
        with self.db.transaction(write=True) as c:
            oid = c.execute(text(
                "INSERT INTO outcomes (request_id, idx, subtask, expert, te, latency_ms, ok, error, embedding, "
                "created_at) VALUES (:r, :i, :s, :e, :te, :l, :ok, :err, :emb, :t) RETURNING id"),
                {"r": request_id, "i": index, "s": subtask, "e": expert, "te": te, "l": latency_ms, "ok": int(ok),
                 "err": error[:1000], "emb": blob, "t": time.time()}).scalar_one()
            if not ok:  # a failure is evidence for C_model
                c.execute(text(_BUMP))
        if not ok:
            self._history = None
        return int(oid)

    def rate(self, request_id: str, *, rating: float, index: int | None = None, expert: str | None = None,
             comment: str = "", idempotency_key: str | None = None) -> int:
        """Attach a rating in [0, 1] (1 = correct) to a request's unrated sub-tasks (one, or all when
        ``index`` is None); outcomes rated before keep their first rating.

        With ``idempotency_key`` (a client's ``Idempotency-Key``), a retry of the same rating returns
        the first call's count and changes nothing, even when the retry runs at the same time as the
        first call on another worker (the key's row is inserted first; the database makes the second
        insert wait for the first transaction, then it reads the stored result).

        Returns:
            number of outcomes rated.

        Raises:
            FeedbackNotFoundError: no matching routed sub-task.
            FeedbackAlreadyRatedError: every matching sub-task is rated already.
            FeedbackKeyReusedError: ``idempotency_key`` was used before for a different rating.
        """
        if not 0.0 <= rating <= 1.0:
            raise ValueError(f"rating must be in [0, 1], got {rating}")
        where = " WHERE request_id = :rid"
        keys: dict = {"rid": request_id}
        if index is not None:
            where += " AND idx = :idx"
            keys["idx"] = index
        if expert is not None:
            where += " AND expert = :expert"
            keys["expert"] = expert
        what = f"request {request_id!r}" + (f" sub-task {index}" if index is not None else "") + (
            f" expert {expert!r}" if expert is not None else "")
        fingerprint = json.dumps([request_id, rating, index, expert, comment[:2000]])
        with self.db.transaction(write=True) as c:
            if idempotency_key is not None:
                fresh = c.execute(text("INSERT INTO rating_keys (key, fingerprint, rated, created_at) "
                                       "VALUES (:k, :f, -1, :t) ON CONFLICT (key) DO NOTHING"),
                                  {"k": idempotency_key, "f": fingerprint, "t": time.time()}).rowcount
                if not fresh:
                    first = c.execute(text("SELECT fingerprint, rated FROM rating_keys WHERE key = :k"),
                                      {"k": idempotency_key}).one()
                    if first.fingerprint != fingerprint:
                        raise FeedbackKeyReusedError(
                            f"idempotency key {idempotency_key!r} was used for a different rating; "
                            "use a new key for a new rating")
                    return int(first.rated)
            n = c.execute(text("UPDATE outcomes SET rating = :rating, comment = :comment, rated_at = :t"
                               + where + " AND rating IS NULL"),
                          {**keys, "rating": rating, "comment": comment[:2000], "t": time.time()}).rowcount
            matched = n or c.execute(text("SELECT COUNT(*) FROM outcomes" + where), keys).scalar_one()
            if matched == 0:
                raise FeedbackNotFoundError(f"no routed outcome for {what}; use the request_id returned by "
                                            "/v1/route")
            if n == 0:
                raise FeedbackAlreadyRatedError(f"{what} is rated already; a rating counts once")
            c.execute(text(_BUMP))
            if idempotency_key is not None:
                c.execute(text("UPDATE rating_keys SET rated = :n WHERE key = :k"), {"n": n, "k": idempotency_key})
        self._history = None
        return n

    def outcomes(self, request_id: str | None = None, limit: int = 100) -> list[dict]:
        sql = "SELECT id, request_id, idx, subtask, expert, te, latency_ms, ok, error, rating FROM outcomes"
        args: dict = {"limit": limit}
        if request_id is not None:
            sql += " WHERE request_id = :rid"
            args["rid"] = request_id
        with self.db.transaction() as c:
            return [dict(r) for r in c.execute(text(sql + " ORDER BY id DESC LIMIT :limit"), args).mappings()]

    def count(self, *, rated: bool | None = None) -> int:
        """Outcomes stored (only rated or unrated ones with ``rated``)."""
        where = "" if rated is None else (" WHERE rating IS NOT NULL" if rated else " WHERE rating IS NULL")
        with self.db.transaction() as c:
            return int(c.execute(text("SELECT COUNT(*) FROM outcomes" + where)).scalar_one())

    def stats(self) -> dict[str, dict[str, float]]:
        """Per expert: calls, failures, rated, mean rating, mean latency."""
        with self.db.transaction() as c:
            rows = c.execute(text(
                "SELECT expert, COUNT(*) n, SUM(1 - ok) failed, COUNT(rating) rated, AVG(rating) mean_rating, "
                "AVG(latency_ms) mean_latency_ms FROM outcomes GROUP BY expert")).mappings().all()
        return {r["expert"]: {k: _number(r[k]) for k in r.keys() if k != "expert"} for r in rows}  # noqa: SIM118

    # -- HistoryProvider -----------------------------------------------------------------------
    def _version(self) -> int:
        with self.db.transaction() as c:
            return int(c.execute(text("SELECT v FROM history_version")).scalar_one())

    def _build_history(self) -> InMemoryHistory:
        with self._lock:
            now = time.monotonic()
            if self._history is not None and now - self._checked_at < self.refresh_s:
                return self._history
            version = self._version()
            self._checked_at = now
            if self._history is not None and version == self._history_version:
                return self._history
            h = InMemoryHistory(k=self.k, shrink=True)
            with self.db.transaction() as c:
                rows = c.execute(text(
                    "SELECT expert, embedding, ok, rating FROM outcomes WHERE embedding IS NOT NULL "
                    "AND (rating IS NOT NULL OR ok = 0)")).mappings().all()
            for r in rows:
                correct = (r["rating"] >= 0.5) if r["rating"] is not None else bool(r["ok"])
                h.record(r["expert"], np.frombuffer(bytes(r["embedding"]), dtype=np.float32), correct=correct)
            self._history, self._history_version = h, version
            return h

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        return self._build_history().error_rate(expert_name, text_embedding)

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray) -> np.ndarray:
        return self._build_history().error_rates(expert_name, np.asarray(text_embeddings, dtype=np.float32))


def feedback_from_settings(settings: Settings, path: str | Path | None = None) -> FeedbackStore:
    """The router's feedback log: ``path`` if given, else the shared database of ``settings.database_url``,
    else ``$QSEF_HOME/router/feedback.sqlite``."""
    return FeedbackStore(path or settings.database_url or settings.path("router") / "feedback.sqlite")


def _number(v):
    """PostgreSQL's SUM/AVG are NUMERIC (``Decimal``); the stats are plain floats/ints."""
    from decimal import Decimal

    return float(v) if isinstance(v, Decimal) else v
