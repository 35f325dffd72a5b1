"""Fixtures for the knowledge-graph tests: an isolated data directory and a tiny hand-made graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from kg.model import KnowledgeGraph, Node


@pytest.fixture
def qsef_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$QSEF_HOME`` pointing at an empty temporary folder (settings and graph caches reset)."""
    from kg import storage

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("QSEF_HOME", str(home))
    storage.clear_cache()
    yield home
    storage.clear_cache()


@pytest.fixture
def tiny() -> KnowledgeGraph:
    """A seven-concept law graph::

    law <- civil law <- contract law          court <- appellate court
              ^                                  ^
            tort  (part_of civil law)      supreme court (is_a appellate court)
    verdict -related- court
    """
    g = KnowledgeGraph("law", meta={"sources": {"test": {"title": "hand-made", "licence": "CC0"}}})
    for nid, label, syns in [
        ("t:law", "law", ()),
        ("t:civil", "civil law", ()),
        ("t:contract", "contract law", ("law of contracts",)),
        ("t:tort", "tort", ("civil wrong",)),
        ("t:court", "court", ("tribunal",)),
        ("t:appellate", "appellate court", ("court of appeals",)),
        ("t:supreme", "supreme court", ("SCOTUS",)),
        ("t:verdict", "verdict", ()),
    ]:
        g.add_node(Node(nid, label, syns, f"definition of {label}", "law", "test"))
    g.add_edge("t:civil", "is_a", "t:law")
    g.add_edge("t:contract", "is_a", "t:civil")
    g.add_edge("t:tort", "part_of", "t:civil")
    g.add_edge("t:appellate", "is_a", "t:court")
    g.add_edge("t:supreme", "is_a", "t:appellate")
    g.add_edge("t:verdict", "related", "t:court")
    return g
