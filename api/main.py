"""The FastAPI app: ``create_app()`` builds it, the lifespan builds the heavy objects once.

Run it with ``qsef serve`` (uvicorn on ``settings.host:port``) or ``uvicorn --factory api.main:create_app``.
OpenAPI docs at ``/docs``.

Several workers: ``qsef serve --workers N`` writes the settings and a run directory, then has uvicorn
start N processes that each call :func:`app_factory`; they share the PostgreSQL store, one metrics
folder (:mod:`api.metrics`) and one host-wide health prober (:mod:`api.probe`).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.batching import MicroBatcher
from api.errors import install_error_handlers
from api.metrics import Metrics
from api.middleware import RequestContextMiddleware
from api.probe import HealthProbe
from api.routes import chat, experts, feedback, health, route, score
from api.schemas import ERROR_RESPONSES
from api.security import ConcurrencyLimit, FeedbackSigner, RateLimiter, feedback_secret
from api.state import AppState
from api.threads import limit_native_threads
from core.settings import Settings
from router.pipeline import Router

log = logging.getLogger(__name__)


#: environment variable naming the run directory of a multi-worker ``qsef serve`` (set for its workers)
RUN_DIR_ENV = "QSEF_SERVE_RUN_DIR"


def create_app(settings: Settings | None = None, *, router: Router | None = None,
               run_dir: Path | None = None) -> FastAPI:
    """Build the app from one settings object (default: ``Settings()`` from the environment — this is a
    face, the place settings are built) and pass it down; ``settings.api`` holds the HTTP limits.
    ``router`` injects a ready router (tests); otherwise the lifespan builds the embedded stack.
    ``run_dir``: one worker of several (see :func:`app_factory`): shared metrics, elected health prober."""
    settings = settings if settings is not None else Settings()
    config = settings.api
    metrics = Metrics(run_dir / "metrics" if run_dir is not None else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        r = router or await run_in_threadpool(Router.from_settings, settings)
        secret = feedback_secret(settings.api_key, settings.path("router") / "feedback.secret")
        state = AppState(settings=settings, router=r, metrics=metrics,
                         signer=FeedbackSigner(secret, ttl_s=config.feedback_token_ttl_s),
                         feedback_limiter=RateLimiter(config.feedback_rate_per_min / 60.0, config.feedback_burst),
                         routes=ConcurrencyLimit(config.max_routes, config.max_queued_routes))
        if config.warm:
            await run_in_threadpool(r.scorer.warm)
        pools = limit_native_threads(settings.torch_threads)
        if config.batch_window_ms > 0:
            state.batcher = MicroBatcher(score.score_texts_fn(r), window_ms=config.batch_window_ms,
                                         max_batch=config.max_batch,
                                         concurrency=config.batch_concurrency, on_batch=metrics.score_batch.observe)
            await state.batcher.start()
        if config.health_interval_s > 0:
            state.probe = HealthProbe(r.registry, r.dispatcher.backend, interval_s=config.health_interval_s,
                                      timeout_s=config.health_timeout_s, on_tick=r.sync,
                                      lock_path=run_dir / "health-probe.lock" if run_dir is not None else None)
            await state.probe.start()
        app.state.qsef = state
        log.info("api ready", extra={"router_llm": r.decomposer.llm.describe(), "batching": bool(state.batcher),
                                   "native_threads": pools})
        try:
            yield
        finally:
            if state.probe:
                await state.probe.stop()
            if state.batcher:
                await state.batcher.stop()
            if router is None:
                r.close()

    app = FastAPI(title="QSEF-KD router", version="0.1.0", lifespan=lifespan,
                  description="Routes compound queries to small domain experts by QSEF transmission efficiency.")
    install_error_handlers(app)
    for module in (route, score, experts, feedback, chat, health):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=config.max_body_bytes, metrics=metrics)
    return app


def app_factory() -> FastAPI:
    """The app of one worker of ``qsef serve --workers N`` (``uvicorn.run("api.main:app_factory",
    factory=True, workers=N)``): the settings the serve command resolved (CLI overrides included) are
    read back from ``$QSEF_SERVE_RUN_DIR/settings.json``; without that variable, ``Settings()``."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return create_app()
    from core.logs import setup_logging

    folder = Path(run_dir)
    settings = Settings(**json.loads((folder / "settings.json").read_text(encoding="utf-8")))
    setup_logging(settings.log_level, settings.log_format)  # a spawned worker: the CLI's set-up did not run here
    return create_app(settings, run_dir=folder)
