"""Router test fixtures: a registry of five tiny-profile experts and a router built from fakes."""

from __future__ import annotations

import pytest
from fakes import FakeBackend, build_fake_router


@pytest.fixture
def make_router(tmp_path):
    FakeBackend.modes = {}

    def build(llm=None, *, timeout_s=5.0, clear_split=False):
        return build_fake_router(tmp_path, llm, timeout_s=timeout_s, clear_split=clear_split)

    return build


@pytest.fixture
def registry(make_router):
    return make_router().registry
