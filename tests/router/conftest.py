"""Router test fixtures: a registry of five tiny-profile experts and a router built from fakes."""

from __future__ import annotations

import pytest

from experts.registry import ExpertRegistry, ExpertSpec
from router.decompose import Decomposer
from router.dispatch import Dispatcher
from router.feedback import FeedbackStore
from router.pipeline import Router
from router.scoring import RegistryScorer
from router.testing import DOMAIN_TEXTS, FakeBackend, HashEncoder, ScriptedLLM


@pytest.fixture
def registry(tmp_path):
    reg = ExpertRegistry(tmp_path / "experts.sqlite")
    for d, texts in DOMAIN_TEXTS.items():
        reg.add(ExpertSpec(name=d, domain=d, backend="hf", backend_kwargs={"model": "none"},
                           profile={"texts": texts}, size_params=500_000_000))
    return reg


@pytest.fixture
def make_router(registry, tmp_path):
    FakeBackend.modes = {}

    def build(llm=None, *, timeout_s=5.0):
        from qsef.engine import QSEFEngine

        fb = FeedbackStore(tmp_path / "feedback.sqlite")
        engine = QSEFEngine(experts=[], encoder=HashEncoder(), history=fb)
        return Router(
            registry=registry,
            decomposer=Decomposer(llm or ScriptedLLM(down=True), list(DOMAIN_TEXTS)),
            scorer=RegistryScorer(registry, engine=engine, history=fb),
            dispatcher=Dispatcher(lambda spec: FakeBackend(spec), timeout_s=timeout_s),
            feedback=fb,
        )

    return build
