"""``POST /v1/feedback``: rate a routed answer; the rating updates the expert's history (``C_model``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.errors import ApiError
from api.schemas import FeedbackCreate, FeedbackPublic

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", response_model=FeedbackPublic)
async def give_feedback(body: FeedbackCreate, state: StateDep) -> FeedbackPublic:
    """Attach a rating to the sub-tasks of a routed request (all, or one with ``subtask_index``)."""
    try:
        value = body.value()
    except ValueError as exc:
        raise ApiError(422, "invalid_request_error", str(exc)) from exc
    store = state.router.feedback
    if store is None:
        raise ApiError(409, "feedback_disabled", "this server stores no feedback")
    n = await run_in_threadpool(lambda: store.rate(body.request_id, rating=value, index=body.subtask_index,
                                                   expert=body.expert, comment=body.comment))
    return FeedbackPublic(request_id=body.request_id, rated=n)
