"""``GET /health`` (liveness, and every expert's state from the health probe and recent calls) and
``GET /metrics`` (Prometheus text format).

The status is ``degraded`` with ``reasons`` when no enabled expert is up, a registry row cannot be read,
or an expert was left out of the last scoring pass (its profile cannot be built or scored)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.schemas import ExpertHealthPublic, HealthPublic

router = APIRouter(tags=["health"])


def _fleet(state) -> tuple[list, list[str]]:
    """The enabled experts and every reason the fleet is degraded (runs in a worker thread)."""
    r = state.router
    experts = r.registry.list(enabled_only=True)
    reasons = [f"registry row {name!r} is damaged: {why}" for name, why in r.registry.damaged().items()]
    # as of the last scoring pass (the server scores once at start-up): /health never builds profiles itself
    reasons += [f"expert {name!r} is left out of scoring: {why}" for name, why in sorted(r.scorer.unavailable.items())]
    down = [e.name for e in experts if e.health == "down"]
    if not experts:
        reasons.append("no enabled experts")
    elif len(down) == len(experts):
        reasons.append("every enabled expert is down")
    return experts, reasons


@router.get("/health", response_model=HealthPublic)
async def health(state: StateDep) -> HealthPublic:
    experts, reasons = await run_in_threadpool(_fleet, state)
    down = [e.name for e in experts if e.health == "down"]
    return HealthPublic(
        status="degraded" if reasons else "ok", reasons=reasons,
        experts=len(experts), experts_down=down, router_llm=state.router.decomposer.llm.describe(),
        router_llm_fallback=bool(getattr(state.router.decomposer.llm, "on_fallback", False)),
        score_batching=state.batcher is not None,
        health_probe_interval_s=state.probe.interval_s if state.probe else 0.0,
        health_prober=bool(state.probe and state.probe.is_prober), worker_pid=os.getpid(),
        store=state.router.registry.describe() if hasattr(state.router.registry, "describe") else "",
        expert_health=[ExpertHealthPublic(name=e.name, health=e.health, detail=e.health_detail, checked_at=e.health_at)
                       for e in experts],
    )


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
