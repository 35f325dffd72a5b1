"""Shared fixtures: seeded randomness and one real vLLM server per test session."""

from __future__ import annotations

import os
import random

import pytest

from core.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VLLM_TEST_MODEL = "smollm2-135m"
VLLM_TEST_PORT = int(os.environ.get("QSEF_TEST_VLLM_PORT", "8019"))


def pytest_collection_modifyitems(config, items):
    """Run tests that stop the shared vLLM server after every other test that may use it."""
    items.sort(key=lambda item: item.get_closest_marker("stops_vllm") is not None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def vllm_server():
    """A real vLLM OpenAI-compatible server (SmolLM2-135M, float32, eager) shared by the session.

    Yields the :class:`router.llm.server.VLLMServer`; ``.base_url`` ends in ``/v1`` and ``.model`` is the
    served name. The server is stopped, with its whole process group, when the session ends.
    """
    from router.llm.server import VLLMServer

    server = VLLMServer(VLLM_TEST_MODEL, settings=Settings(), port=VLLM_TEST_PORT)
    server.stop()  # a leftover from an interrupted run
    server.start(timeout=900)
    try:
        yield server
    finally:
        server.stop()
