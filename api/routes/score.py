"""``POST /v1/score``: the QSEF breakdown of one text against every expert.

Concurrent requests are micro-batched into one QSEF pass (see :mod:`api.batching`); with batching off
(``QSEF_API_BATCH_WINDOW_MS=0``) each request makes the same call with one text. Either way the worker
thread does all the per-text work: one ``(T, E)`` scoring pass, the response rows built from the
matrices with one ``tolist()`` each (not one dataclass per expert), and each row validated against
:class:`api.schemas.ScorePublic` and rendered to JSON bytes there, so the event loop only moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.routes.route import check_length
from api.schemas import ExpertScorePublic, ScoreCreate, ScorePublic
from qsef.components import COMPONENT_FIELDS
from router.pipeline import Router

router = APIRouter(prefix="/v1", tags=["score"])

_FIELDS = tuple(ExpertScorePublic.model_fields)  # response key order


def score_rows(result: Any) -> list[dict[str, Any]]:
    """The public rows of a :class:`qsef.engine.ScoreResult`, experts best first, for all T texts at once.

    Equal to ``result.to_dict(i)`` restricted to the fields of :class:`ScorePublic` (the test checks
    it); switched-off components are ``None``.
    """
    t, e = result.TE.shape
    order = np.argsort(result.rank, axis=1, kind="stable")  # (T, E): column of rank 1, 2, ...
    cols: dict[str, list[list[Any]]] = {
        "expert": [result.names] * t,
        "domain": [[x.domain for x in result.experts]] * t,
        "D": result.D.tolist(), "R": result.R.tolist(), "TE": result.TE.tolist(),
        "P": result.probabilities().tolist(), "rank": result.rank.tolist(),
    }
    for comp, fld in COMPONENT_FIELDS.items():
        cols[fld] = result.components[comp].tolist() if comp in result.components else [[None] * e] * t
    rows = []
    for i in range(t):
        experts = [{f: cols[f][i][j] for f in _FIELDS} for j in order[i].tolist()]
        rows.append({"text": result.texts[i], "experts": experts, "flags": list(result.flags[i]), "batch_size": t})
    return rows


def score_texts_fn(r: Router) -> Callable[[list[str]], list[bytes]]:
    """``texts -> one JSON response body per text`` with a single batched QSEF pass."""

    def fn(texts: list[str]) -> list[bytes]:
        rows = score_rows(r.scorer.score(texts))
        return [ScorePublic.model_validate(row).model_dump_json().encode() for row in rows]

    return fn


@router.post("/score", response_model=ScorePublic)
async def score_text(body: ScoreCreate, state: StateDep) -> Response:
    """Every candidate expert with D_emb, D_kg, C_data, C_model, C_sparsity, R, TE and rank."""
    check_length(body.text, state.settings.api.max_query_chars, "text")
    if state.batcher is not None:
        payload = await state.batcher.submit(body.text)
    else:
        state.metrics.score_batch.observe(1)
        payload = (await run_in_threadpool(score_texts_fn(state.router), [body.text]))[0]
    return Response(payload, media_type="application/json")
