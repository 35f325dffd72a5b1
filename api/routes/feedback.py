"""``POST /v1/feedback``: rate a routed answer; the rating updates the expert's history (``C_model``).

A rating moves routing, so it needs either the API key or the feedback token that ``/v1/route`` (or
chat completions) returned for that request and expert (``feedback_tokens``). Without the key, each
client host may send ``feedback_burst`` ratings at once and ``feedback_rate_per_min`` a minute (429
with ``Retry-After`` beyond). Each routed outcome counts once: rating it again is a 409 ``already_rated``.

Retries: send an ``Idempotency-Key`` header (or ``idempotency_key`` in the body). A retried POST with
the same key — after a timeout, a 503, a worker killed mid-request — answers the first result
(``replayed`` is not distinguished) and stores nothing twice; the same key with a different rating is
a 422 ``idempotency_key_reused``. A 2xx means the rating is committed to the store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from api.deps import HasApiKeyDep, StateDep
from api.errors import ApiError
from api.schemas import FeedbackCreate, FeedbackPublic

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", response_model=FeedbackPublic)
async def give_feedback(body: FeedbackCreate, state: StateDep, has_key: HasApiKeyDep, request: Request,
                        idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> FeedbackPublic:
    """Attach a rating to the sub-tasks of a routed request (all, or one with ``subtask_index``)."""
    key = idempotency_key or body.idempotency_key
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise ApiError(422, "invalid_request_error", "idempotency_key: the header and the body field differ")
    try:
        value = body.value()
    except ValueError as exc:
        raise ApiError(422, "invalid_request_error", str(exc)) from exc
    store = state.router.feedback
    if store is None:
        raise ApiError(409, "feedback_disabled", "this server stores no feedback")
    if not has_key:
        assert state.feedback_limiter is not None and state.signer is not None
        state.feedback_limiter.check(request.client.host if request.client else "unknown", "feedback ratings")
        if body.token is None:
            raise ApiError(401, "feedback_token_required",
                           "token: rating an answer needs the feedback token /v1/route returned for this request "
                           "and expert (feedback_tokens[].token), or the API key")
        if body.expert is None:
            raise ApiError(422, "invalid_request_error", "expert: required with a token (the expert the token names)")
        if not state.signer.verify(body.token, body.request_id, body.expert):
            raise ApiError(403, "invalid_feedback_token",
                           "token: not valid for this request_id and expert, or expired")
    n = await run_in_threadpool(lambda: store.rate(body.request_id, rating=value, index=body.subtask_index,
                                                   expert=body.expert, comment=body.comment,
                                                   idempotency_key=key))
    return FeedbackPublic(request_id=body.request_id, rated=n)
