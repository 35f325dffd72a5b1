"""What the lifespan builds and the dependencies hand out: one :class:`AppState` per app."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.batching import MicroBatcher
from api.metrics import Metrics
from api.probe import HealthProbe
from api.security import ConcurrencyLimit, FeedbackSigner, RateLimiter
from core.settings import Settings
from router.pipeline import Router


@dataclass
class AppState:
    settings: Settings
    router: Router
    metrics: Metrics = field(default_factory=Metrics)
    batcher: MicroBatcher | None = None
    probe: HealthProbe | None = None
    signer: FeedbackSigner | None = None
    feedback_limiter: RateLimiter | None = None
    routes: ConcurrencyLimit | None = None
