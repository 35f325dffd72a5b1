"""Durable feedback: every routed sub-task's outcome, plus user ratings, in SQLite.

Each dispatched sub-task is stored with its expert, TE, latency, success and the sub-task's
embedding. A later rating (``POST /v1/feedback``) marks it correct or not. The store is also a
:class:`qsef.history.HistoryProvider`: ``error_rate(expert, embedding)`` is the similarity-weighted
error of that expert on the nearest past sub-tasks, which QSEF's ``C_model`` reads.

An outcome counts as an error when it was rated below 0.5, or — unrated — when the expert failed
(timeout or exception). Unrated successes are not evidence of correctness and are left out.

Each outcome is rated at most once: a second rating of the same outcomes is refused
(:class:`FeedbackAlreadyRatedError`, HTTP 409), so one rating per request id and expert counts once.

Example:
    >>> fb = FeedbackStore(tmp_path / "feedback.sqlite")
    >>> oid = fb.record(request_id="r1", index=0, subtask="What is GDP?", expert="finance",
    ...                 te=0.4, latency_ms=812.0, ok=True, embedding=vec)
    >>> fb.rate("r1", rating=0.0)        # the user says the answer was wrong
    >>> fb.error_rate("finance", vec)    # now > 0.5
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from core.db import connect, migrate
from qsef.history import InMemoryHistory

__all__ = ["FeedbackAlreadyRatedError", "FeedbackNotFoundError", "FeedbackStore"]

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
]


class FeedbackNotFoundError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class FeedbackAlreadyRatedError(ValueError):
    """Every matching outcome already carries a rating; a rating counts once."""


class FeedbackStore:
    """SQLite (WAL) feedback store that doubles as QSEF's history provider.

    Args:
        path: the database file.
        k: nearest past sub-tasks per expert used by :meth:`error_rate`.
    """

    def __init__(self, path: str | Path, *, k: int = 10):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.k = k
        self._lock = threading.Lock()
        self._history: InMemoryHistory | None = None
        with self._connect() as db:
            migrate(db, _SCHEMA, what="feedback store")

    def _connect(self):
        return connect(self.path)

    def record(self, *, request_id: str, index: int, subtask: str, expert: str, te: float | None,
               latency_ms: float, ok: bool, error: str = "", embedding: np.ndarray | None = None) -> int:
        """Store one dispatched sub-task; returns its outcome id."""
        blob = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
        with self._lock, self._connect() as db:
            cur = db.execute(
                "INSERT INTO outcomes (request_id, idx, subtask, expert, te, latency_ms, ok, error, embedding, "
                "created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (request_id, index, subtask, expert, te, latency_ms, int(ok), error[:1000], blob, time.time()),
            )
            if not ok:
                self._history = None
            return int(cur.lastrowid)

    def rate(self, request_id: str, *, rating: float, index: int | None = None, expert: str | None = None,
             comment: str = "") -> int:
        """Attach a rating in [0, 1] (1 = correct) to a request's unrated sub-tasks (one, or all when
        ``index`` is None); outcomes rated before keep their first rating.

        Returns:
            number of outcomes rated.

        Raises:
            FeedbackNotFoundError: no matching routed sub-task.
            FeedbackAlreadyRatedError: every matching sub-task is rated already.
        """
        if not 0.0 <= rating <= 1.0:
            raise ValueError(f"rating must be in [0, 1], got {rating}")
        where = " WHERE request_id = ?"
        keys: list = [request_id]
        if index is not None:
            where += " AND idx = ?"
            keys.append(index)
        if expert is not None:
            where += " AND expert = ?"
            keys.append(expert)
        what = f"request {request_id!r}" + (f" sub-task {index}" if index is not None else "") + (
            f" expert {expert!r}" if expert is not None else "")
        with self._lock, self._connect() as db:
            n = db.execute("UPDATE outcomes SET rating = ?, comment = ?, rated_at = ?" + where + " AND rating IS NULL",
                           [rating, comment[:2000], time.time(), *keys]).rowcount
            matched = n or db.execute("SELECT COUNT(*) FROM outcomes" + where, keys).fetchone()[0]
            self._history = None
        if matched == 0:
            raise FeedbackNotFoundError(f"no routed outcome for {what}; use the request_id returned by /v1/route")
        if n == 0:
            raise FeedbackAlreadyRatedError(f"{what} is rated already; a rating counts once")
        return n

    def outcomes(self, request_id: str | None = None, limit: int = 100) -> list[dict]:
        sql = "SELECT id, request_id, idx, subtask, expert, te, latency_ms, ok, error, rating FROM outcomes"
        args: tuple = ()
        if request_id is not None:
            sql += " WHERE request_id = ?"
            args = (request_id,)
        with self._connect() as db:
            return [dict(r) for r in db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]

    def stats(self) -> dict[str, dict[str, float]]:
        """Per expert: calls, failures, rated, mean rating, mean latency."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT expert, COUNT(*) n, SUM(1 - ok) failed, COUNT(rating) rated, AVG(rating) mean_rating, "
                "AVG(latency_ms) mean_latency_ms FROM outcomes GROUP BY expert"
            ).fetchall()
        return {r["expert"]: {k: r[k] for k in r.keys() if k != "expert"} for r in rows}  # noqa: SIM118

    # -- HistoryProvider -----------------------------------------------------------------------
    def _build_history(self) -> InMemoryHistory:
        with self._lock:
            if self._history is not None:
                return self._history
            h = InMemoryHistory(k=self.k, shrink=True)
            with self._connect() as db:
                rows = db.execute(
                    "SELECT expert, embedding, ok, rating FROM outcomes WHERE embedding IS NOT NULL "
                    "AND (rating IS NOT NULL OR ok = 0)"
                ).fetchall()
            for r in rows:
                correct = (r["rating"] >= 0.5) if r["rating"] is not None else bool(r["ok"])
                h.record(r["expert"], np.frombuffer(r["embedding"], dtype=np.float32), correct=correct)
            self._history = h
            return h

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        return self._build_history().error_rate(expert_name, text_embedding)

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray) -> np.ndarray:
        return self._build_history().error_rates(expert_name, np.asarray(text_embeddings, dtype=np.float32))
