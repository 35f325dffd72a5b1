"""API fixtures: the real app (middleware, limits, handlers) around a router built from fakes."""

from __future__ import annotations

import pytest
from fakes import FakeBackend, build_fake_router
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import ApiSettings, Settings

API_KEY = "test-key-123"


@pytest.fixture
def make_client(tmp_path):
    FakeBackend.modes = {}
    clients = []

    def build(*, llm=None, api_key=API_KEY, timeout_s=5.0, database_url=None, **config):
        config.setdefault("health_interval_s", 0)  # probes only where a test asks for them
        settings = Settings(home=tmp_path, api_key=api_key, api=ApiSettings(warm=False, **config))
        router = build_fake_router(tmp_path, llm, timeout_s=timeout_s, database_url=database_url)
        router.registry.confine = settings.confine  # as Router.from_settings builds it
        app = create_app(settings, router=router)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()
