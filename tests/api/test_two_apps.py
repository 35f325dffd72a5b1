"""Two apps with two data directories in one process share no state: the settings object each face
builds is the only place configuration comes from, and it is passed all the way down."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import ApiSettings, Settings
from qsef.profiles import profiles_dir


def _settings(home, key: str) -> Settings:
    return Settings(home=home, api_key=key, api=ApiSettings(warm=False, health_interval_s=0, batch_window_ms=0))


def test_two_apps_with_two_homes_do_not_share_state(tmp_path):
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    app_a, app_b = create_app(_settings(home_a, "key-a")), create_app(_settings(home_b, "key-b"))
    with TestClient(app_a) as a, TestClient(app_b) as b:
        expert = {"name": "tax-a", "domain": "finance", "backend": "openai",
                  "backend_kwargs": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
        assert a.post("/v1/experts", json=expert, headers={"X-API-Key": "key-a"}).status_code == 201
        # each app checks its own key: A's key means nothing to B
        assert b.post("/v1/experts", json=expert, headers={"X-API-Key": "key-a"}).status_code == 401
        names_a = {e["name"] for e in a.get("/v1/experts").json()}
        names_b = {e["name"] for e in b.get("/v1/experts").json()}
        assert "tax-a" in names_a and "tax-a" not in names_b

        for app, home in ((app_a, home_a), (app_b, home_b)):
            router = app.state.qsef.router
            # the registry, the feedback store and everything the engine reads live under this app's home
            assert router.registry.path.parent == home / "router"
            assert router.feedback.path.parent == home / "router"
            engine = router.scorer.engine
            assert engine.settings.home == home and engine.kg.settings.home == home
            assert profiles_dir(engine.settings).is_relative_to(home)
            assert router.dispatcher.pool.settings.home == home
    assert (home_a / "router" / "experts.sqlite").is_file() and (home_b / "router" / "experts.sqlite").is_file()
