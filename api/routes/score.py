"""``POST /v1/score``: the QSEF breakdown of one text against every expert. Concurrent requests are
micro-batched into one encoder call (see :mod:`api.batching`)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.routes.route import check_length
from api.schemas import ScoreCreate, ScorePublic
from router.pipeline import Router

router = APIRouter(prefix="/v1", tags=["score"])


def score_texts_fn(r: Router) -> Callable[[list[str]], list[dict]]:
    """``texts -> one JSON-ready breakdown per text`` with a single batched QSEF pass."""

    def fn(texts: list[str]) -> list[dict]:
        result = r.scorer.score(texts)
        out = []
        for i in range(len(texts)):
            d = result.to_dict(i)
            out.append({"text": d["text"], "experts": d["experts"], "flags": d["flags"], "batch_size": len(texts)})
        return out

    return fn


@router.post("/score", response_model=ScorePublic)
async def score_text(body: ScoreCreate, state: StateDep) -> dict:
    """Every candidate expert with D_emb, D_kg, C_data, C_model, C_sparsity, R, TE and rank."""
    check_length(body.text, state.config.max_query_chars, "text")
    if state.batcher is not None:
        row = await state.batcher.submit(body.text)
    else:
        state.metrics.score_batch.observe(1)
        row = (await run_in_threadpool(score_texts_fn(state.router), [body.text]))[0]
    return row  # validated and serialised once, by response_model
