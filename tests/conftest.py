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
    """Run tests that stop the shared vLLM server after every other test that may use it; those marked
    ``stops_vllm(after_other_stops=True)`` (they start a server themselves) after the other stopping tests."""
    def order(item) -> tuple[bool, bool]:
        mark = item.get_closest_marker("stops_vllm")
        return mark is not None, bool(mark and mark.kwargs.get("after_other_stops"))

    items.sort(key=order)


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


# -- PostgreSQL: one throwaway cluster per session; store tests run on both backends -----------------------

@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL cluster (``initdb`` in a temp folder, ``pg_ctl start`` on a free loopback port),
    stopped and deleted when the session ends. ``QSEF_TEST_DATABASE_URL`` points the tests at a server
    already running instead. Missing binaries FAIL the tests that need them (``make setup`` installs them)."""
    external = os.environ.get("QSEF_TEST_DATABASE_URL")
    if external:
        yield _ExternalPostgres(external)
        return
    from core.pglocal import LocalPostgres, PostgresNotInstalledError

    try:
        pg = LocalPostgres().start()
    except PostgresNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield pg
    finally:
        pg.stop()


class _ExternalPostgres:
    def __init__(self, url: str):
        self.url = url

    def create_schema(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{name}"')
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options=-csearch_path%3D{name}"


_schemas = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """Where a store test keeps its data, once per backend: ``target(name)`` gives a SQLite file under
    ``tmp_path`` or the URL of a fresh PostgreSQL schema (the same for every call in one test, so two
    store objects opened on it are two "workers" sharing one database). ``.dialect`` names the backend."""
    if request.param == "sqlite":
        def target(name: str = "store"):
            return tmp_path / f"{name}.sqlite"
    else:
        url = request.getfixturevalue("pg_cluster").create_schema(f"t{next(_schemas)}")

        def target(name: str = "store"):
            return url
    target.dialect = request.param
    return target
