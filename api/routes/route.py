"""``POST /v1/route``: a compound query in, sub-tasks, chosen experts, scores, answers and timings out.

A route runs in a worker thread under :func:`run_route`: at most ``max_routes`` at once (a full queue
is a 503 with ``Retry-After``), and when the client disconnects or the request budget
(``route_budget_s``) is spent the route is cancelled — the running generation stops within a
decoding step, so an abandoned request does not keep the shared model busy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import RequestIdDep, StateDep
from api.errors import ApiError
from api.schemas import FeedbackTokenPublic, RouteCreate, RoutePublic
from api.state import AppState
from router.pipeline import RouteCancelledError, RouteResult

router = APIRouter(prefix="/v1", tags=["route"])
DISCONNECT_POLL_S = 0.1


def check_length(text: str, limit: int, field: str = "query") -> None:
    if len(text) > limit:
        raise ApiError(422, "invalid_request_error", f"{field} has {len(text)} characters; the limit is {limit}")


async def run_route(request: Request, state: AppState, fn: Callable[[threading.Event], RouteResult]) -> RouteResult:
    """Run ``fn(cancel)`` in a worker thread within the concurrency limit; set ``cancel`` when the
    client disconnects or the budget is spent, and wait for the worker to stop.

    Raises:
        ApiError: 503 (no slot), 504 (budget spent), 499 (client gone; nobody reads it).
    """
    assert state.routes is not None
    cancel = threading.Event()
    async with state.routes.slot():
        loop = asyncio.get_running_loop()
        deadline = loop.time() + state.settings.api.route_budget_s
        task = asyncio.ensure_future(run_in_threadpool(fn, cancel))
        why = None
        while why is None:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                break
            if await request.is_disconnected():
                why = "client_disconnected"
            elif loop.time() >= deadline:
                why = "budget"
        if why is not None:
            cancel.set()
            await asyncio.wait({task})  # ends within a decoding step; the slot is free only then
        try:
            return task.result()
        except RouteCancelledError:
            if why == "budget":
                raise ApiError(504, "request_budget_exceeded", f"the request ran past its budget of "
                               f"{state.settings.api.route_budget_s:g} s and was cancelled") from None
            raise ApiError(499, "client_closed_request", "the client disconnected; the request was cancelled") from None


def feedback_tokens(state: AppState, result: RouteResult) -> list[FeedbackTokenPublic]:
    """One token per answering expert (only outcomes that were recorded can be rated)."""
    if state.signer is None or state.router.feedback is None:
        return []
    experts = sorted({s.expert for s in result.subtasks if s.expert})
    out = []
    for e in experts:
        token, expires = state.signer.sign(result.request_id, e)
        out.append(FeedbackTokenPublic(expert=e, token=token, expires_at=expires))
    return out


@router.post("/route", response_model=RoutePublic)
async def route_query(body: RouteCreate, state: StateDep, rid: RequestIdDep, request: Request) -> RoutePublic:
    """Decompose, score with QSEF, dispatch to the chosen experts and aggregate."""
    check_length(body.query, state.settings.api.max_query_chars)
    result = await run_route(request, state, lambda cancel: state.router.route(body.query, body.options,
                                                                               request_id=rid, cancel=cancel))
    state.metrics.observe_route(result)
    public = RoutePublic.model_validate(result.model_dump())
    public.feedback_tokens = feedback_tokens(state, result)
    return public
