"""``POST /v1/score``: the QSEF breakdown of one text against every expert.

Concurrent requests are micro-batched into one QSEF pass (see :mod:`api.batching`); with batching off
(``QSEF_API_BATCH_WINDOW_MS=0``) each request makes the same call with one text. Either way the worker
thread does all the per-text work: one ``(T, E)`` scoring pass, each text's typed
:class:`qsef.scores.TextScores` (P included) wrapped in :class:`api.schemas.ScorePublic` and rendered to
JSON bytes there, so the event loop only moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.routes.route import check_length
from api.schemas import ScoreCreate, ScorePublic
from router.pipeline import Router

router = APIRouter(prefix="/v1", tags=["score"])


def score_texts_fn(r: Router) -> Callable[[list[str]], list[bytes]]:
    """``texts -> one JSON response body per text`` with a single batched QSEF pass."""

    def fn(texts: list[str]) -> list[bytes]:
        result = r.scorer.score(texts)
        return [ScorePublic.of(result.scores(i), batch_size=len(texts)).model_dump_json().encode()
                for i in range(len(texts))]

    return fn


@router.post("/score", response_model=ScorePublic)
async def score_text(body: ScoreCreate, state: StateDep) -> Response:
    """Every candidate expert with D_emb, D_kg, C_data, C_model, C_sparsity, D, R, TE, P and rank."""
    check_length(body.text, state.settings.api.max_query_chars, "text")
    if state.batcher is not None:
        payload = await state.batcher.submit(body.text)
    else:
        state.metrics.score_batch.observe(1)
        payload = (await run_in_threadpool(score_texts_fn(state.router), [body.text]))[0]
    return Response(payload, media_type="application/json")
