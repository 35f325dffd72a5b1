"""Deterministic stand-ins for the router and API tests: a hashing encoder, fake expert backends and a
scripted router LLM (``from fakes import ...``; ``tests/`` is on the path through its conftest). Test
code only: it lives under ``tests/`` so the product ships no fakes.

Example:
    >>> FakeBackend.modes["law"] = "down"          # the law expert now raises BackendError
    >>> llm = ScriptedLLM(['{"subtasks": [...]}'])  # returns canned outputs in order
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import ClassVar

import numpy as np

from experts.backends import BackendError, ExpertBackend, GenerationCancelledError
from router.llm import RouterLLM, RouterLLMUnavailableError

DOMAIN_TEXTS = {
    "medicine": ["disease symptoms treatment doctor drug dose patient blood pressure diabetes",
                 "clinical diagnosis therapy medicine hospital infection fever"],
    "law": ["contract court lawsuit legal rights tenant landlord statute judge",
            "copyright licence law crime attorney liability tort"],
    "code": ["python function code program bug compile algorithm list string",
             "software javascript sql database api recursion sort array"],
    "finance": ["tax invest stock bond loan mortgage interest rate bank money",
                "accounting budget retirement inflation dividend portfolio deduct"],
    "general": ["history geography capital country river mountain culture",
                "science planet animal music book travel weather"],
}


class HashEncoder:
    """Bag-of-words hashed into 256 dims, L2-normalised: deterministic, no model."""

    name = "hash"
    dim = 256

    def __init__(self):
        self.calls = 0

    def encode(self, texts, *, use_cache=True):
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        out += 1e-6
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class FakeBackend(ExpertBackend):
    """Answers instantly; ``mode`` = ok | down | slow (sleeps ``delay``, or until cancelled)."""

    name = "fake"
    modes: ClassVar[dict[str, str]] = {}  # expert name -> ok | down | slow, shared by all instances

    def __init__(self, spec, **kwargs):
        super().__init__(spec)
        self.delay = 2.0

    def generate(self, messages, *, max_tokens=128, temperature=0.0, cancel=None):
        mode = self.modes.get(self.spec.name, "ok")
        if mode == "down":
            raise BackendError(f"{self.spec.name} is down")
        if mode == "slow":
            if cancel is None:
                time.sleep(self.delay)
            elif cancel.wait(self.delay):
                raise GenerationCancelledError(f"{self.spec.name}: cancelled")
        return f"[{self.spec.name}] answer to: {messages[-1]['content']}"

    def health(self, *, timeout_s=2.0):
        mode = self.modes.get(self.spec.name, "ok")
        return mode != "down", f"fake expert: {mode}"


class ScriptedLLM(RouterLLM):
    """Returns canned outputs in order (or raises when ``down``)."""

    name = "scripted"
    supports_json_schema = True

    def __init__(self, outputs=(), *, down=False):
        self.outputs = list(outputs)
        self.down = down
        self.calls = 0

    def complete(self, messages, *, json_schema=None, prefill="", max_tokens=256, temperature=0.0):
        self.calls += 1
        if self.down:
            raise RouterLLMUnavailableError("connection refused")
        return self.outputs.pop(0) if self.outputs else "{}"


def _tiny_graphs(settings) -> None:
    """A small user graph per domain in ``settings.home`` (one concept per profile word, under a root), so
    fake routers link and measure D_kg on a few nodes instead of loading the shipped graphs (seconds each)."""
    from kg.model import KnowledgeGraph, Node
    from kg.storage import user_path, write_graph

    for d, texts in DOMAIN_TEXTS.items():
        if user_path(settings, d).is_file():
            continue
        g = KnowledgeGraph(d)
        g.add_node(Node(f"t:{d}", d, (), f"the {d} domain", source="test"))
        for w in sorted({w for t in texts for w in t.split()}):
            g.add_node(Node(f"t:{d}:{w}", w, (), f"{w} ({d})", source="test"))
            g.add_edge(f"t:{d}:{w}", "is_a", f"t:{d}", source="test")
        write_graph(g, user_path(settings, d), backup=False)


def build_fake_router(folder, llm: RouterLLM | None = None, *, timeout_s: float = 5.0, encoder=None,
                      database_url: str | None = None, clear_split: bool = False):
    """A full :class:`router.pipeline.Router` on fakes: five tiny-profile experts (registry under ``folder``,
    or in the PostgreSQL database ``database_url``), the hashing encoder, :class:`FakeBackend` experts, and
    ``llm`` (default: an unreachable router LLM). The clear-split shortcut is off unless asked for, so a
    compound query reaches ``llm`` and the tests see its paths."""
    from pathlib import Path

    from core.settings import Settings
    from experts.registry import ExpertRegistry, ExpertSpec
    from qsef.engine import QSEFEngine
    from router.decompose import Decomposer
    from router.dispatch import Dispatcher
    from router.feedback import FeedbackStore
    from router.pipeline import Router
    from router.scoring import RegistryScorer

    folder = Path(folder)
    settings = Settings(home=folder)
    _tiny_graphs(settings)
    registry = ExpertRegistry(database_url or folder / "experts.sqlite")
    if not registry.names():
        for d, texts in DOMAIN_TEXTS.items():
            registry.add(ExpertSpec(name=d, domain=d, backend="hf", backend_kwargs={"model": "none"},
                                    profile={"texts": texts}, size_params=500_000_000))
    fb = FeedbackStore(database_url or folder / "feedback.sqlite")
    engine = QSEFEngine(experts=[], encoder=encoder or HashEncoder(), history=fb, settings=settings)
    return Router(
        registry=registry,
        decomposer=Decomposer(llm or ScriptedLLM(down=True), list(DOMAIN_TEXTS), clear_split=clear_split),
        scorer=RegistryScorer(registry, settings=settings, engine=engine, history=fb),
        dispatcher=Dispatcher(lambda spec: FakeBackend(spec), timeout_s=timeout_s),
        feedback=fb,
    )


class FailingCapture:
    """Fault injection for :func:`distill.capture.capture_topk`: delegates to a real capture backend and
    raises on its ``fail_on_call``-th ``topk`` call (an interrupted capture)."""

    def __init__(self, inner, *, fail_on_call: int):
        self.inner, self.fail_on_call, self.calls = inner, fail_on_call, 0
        self.batch_size = inner.batch_size

    def engine(self):
        return self.inner.engine()

    def topk(self, ids, k):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("injected capture failure")
        return self.inner.topk(ids, k)
