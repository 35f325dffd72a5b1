"""HTTP-service settings (``QSEF_API_*`` environment variables); the project-wide ones stay in
:mod:`core.settings` (host, port, api_key, router backend…)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiConfig(BaseSettings):
    """Limits and tuning of the HTTP service."""

    model_config = SettingsConfigDict(env_prefix="QSEF_API_", extra="ignore")

    max_body_bytes: int = Field(256 * 1024, ge=1024, description="larger request bodies get 413")
    max_query_chars: int = Field(8000, ge=16, description="longest query / text accepted (422 beyond)")
    max_messages: int = Field(64, ge=1, description="most chat messages accepted")
    batch_window_ms: float = Field(5.0, ge=0, description="/v1/score micro-batch window; 0 = no batching")
    max_batch: int = Field(64, ge=1, description="most texts per encoder call")
    batch_concurrency: int = Field(2, ge=1, le=64, description="micro-batches scored at once (about one per core)")
    health_interval_s: float = Field(30.0, ge=0, description="seconds between expert health probes (remote: "
                                                             "GET /v1/models; local: weights readable); 0 = off")
    health_timeout_s: float = Field(2.0, gt=0, le=60, description="budget of one remote health check")
    warm: bool = Field(True, description="load the encoder and profiles at start-up")
    feedback_token_ttl_s: float = Field(86_400.0, gt=0, description="how long a feedback token stays valid")
    feedback_rate_per_min: float = Field(30.0, gt=0, description="ratings a minute per client host without the "
                                                                 "API key (token bucket; 429 beyond)")
    feedback_burst: int = Field(10, ge=1, description="ratings a client host may send at once without the API key")
    max_routes: int = Field(4, ge=1, description="/v1/route and chat requests running at once")
    max_queued_routes: int = Field(16, ge=0, description="requests waiting for a slot; 503 + Retry-After beyond")
    route_budget_s: float = Field(300.0, gt=0, le=3600, description="per-request budget of a route or chat "
                                                                    "request; generation is cancelled at the end")
