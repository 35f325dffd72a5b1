"""Dispatch: health-aware candidate order."""

from __future__ import annotations

from router.dispatch import Dispatcher
from router.testing import FakeBackend


def test_expert_marked_down_is_tried_last_and_the_skip_is_recorded(registry):
    FakeBackend.modes = {}
    registry.set_health("law", "down", "GET /v1/models: ConnectError")
    d = Dispatcher(lambda spec: FakeBackend(spec), timeout_s=5)
    [ans] = d.dispatch("What is a tort?", ["law"], [1.0], ["law", "general", "code"], registry.get)
    assert ans.expert == "general" and ans.fell_back
    skip, call = ans.attempts
    assert skip.expert == "law" and skip.skipped and not skip.ok and "ConnectError" in skip.error
    assert call.expert == "general" and call.ok and call.fallback_for == "law" and not call.skipped

    FakeBackend.modes = {"general": "down", "code": "down"}  # every healthy one fails: the down one is still tried
    [ans] = d.dispatch("What is a tort?", ["law"], [1.0], ["law", "general", "code"], registry.get)
    assert ans.expert == "law" and not ans.fell_back and [a.expert for a in ans.attempts] == ["law", "general", "code", "law"]
    d.close()
