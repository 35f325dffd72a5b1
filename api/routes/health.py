"""``GET /health`` (liveness, and every expert's state from the health probe and recent calls) and
``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.schemas import ExpertHealthPublic, HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
async def health(state: StateDep) -> HealthPublic:
    experts = await run_in_threadpool(state.router.registry.list, enabled_only=True)
    down = [e.name for e in experts if e.health == "down"]
    return HealthPublic(
        status="ok" if experts and len(down) < len(experts) else "degraded",
        experts=len(experts), experts_down=down, router_llm=state.router.decomposer.llm.describe(),
        router_llm_fallback=bool(getattr(state.router.decomposer.llm, "on_fallback", False)),
        score_batching=state.batcher is not None,
        health_probe_interval_s=state.probe.interval_s if state.probe else 0.0,
        expert_health=[ExpertHealthPublic(name=e.name, health=e.health, detail=e.health_detail, checked_at=e.health_at)
                       for e in experts],
    )


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
