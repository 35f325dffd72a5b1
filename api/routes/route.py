"""``POST /v1/route``: a compound query in, sub-tasks, chosen experts, scores, answers and timings out."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import RequestIdDep, StateDep
from api.errors import ApiError
from api.schemas import RouteCreate, RoutePublic

router = APIRouter(prefix="/v1", tags=["route"])


def check_length(text: str, limit: int, field: str = "query") -> None:
    if len(text) > limit:
        raise ApiError(422, "invalid_request_error", f"{field} has {len(text)} characters; the limit is {limit}")


@router.post("/route", response_model=RoutePublic)
async def route_query(body: RouteCreate, state: StateDep, rid: RequestIdDep) -> RoutePublic:
    """Decompose, score with QSEF, dispatch to the chosen experts and aggregate."""
    check_length(body.query, state.settings.api.max_query_chars)
    result = await run_in_threadpool(state.router.route, body.query, body.options, request_id=rid)
    state.metrics.observe_route(result)
    return RoutePublic.model_validate(result.model_dump())
