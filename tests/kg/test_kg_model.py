"""Graph model, distances and anchors on a tiny hand-made graph."""

from __future__ import annotations

import pytest

from kg.errors import GraphError
from kg.model import KnowledgeGraph, Node


def test_nodes_and_edges(tiny: KnowledgeGraph) -> None:
    assert tiny.number_of_nodes() == 8
    assert tiny.number_of_edges() == 6
    assert tiny.parents("t:contract") == ["t:civil"]
    assert set(tiny.children("t:court")) == {"t:appellate"}
    assert tiny.node("t:supreme").synonyms == ("SCOTUS",)
    assert tiny.add_edge("t:civil", "is_a", "t:law") is False  # already there


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("t:law", "likes", "t:court"), "unknown relation"),
        (("t:law", "is_a", "t:nowhere"), "no node 't:nowhere'"),
        (("t:law", "is_a", "t:law"), "self-loop"),
    ],
)
def test_add_edge_refusals(tiny: KnowledgeGraph, args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        tiny.add_edge(*args)


def test_cycle_check(tiny: KnowledgeGraph) -> None:
    with pytest.raises(GraphError, match="cycle"):
        tiny.add_edge("t:law", "is_a", "t:contract", check_cycle=True)


def test_node_refusals(tiny: KnowledgeGraph) -> None:
    with pytest.raises(GraphError, match="already exists"):
        tiny.add_node(Node("t:law", "law again"))
    with pytest.raises(GraphError, match="must not be empty"):
        tiny.add_node(Node(" ", "x"))
    with pytest.raises(GraphError, match="tabs or newlines"):
        tiny.add_node(Node("a\tb", "x"))
    with pytest.raises(GraphError, match="no node"):
        tiny.node("t:missing")


def test_path_distance(tiny: KnowledgeGraph) -> None:
    assert tiny.path_distance(["t:law"], ["t:law"]) == 0.0
    assert tiny.path_distance(["t:contract"], ["t:law"], cap=6) == pytest.approx(2 / 6)
    # multi-source: the closest pair counts
    assert tiny.path_distance(["t:contract", "t:supreme"], ["t:court"], cap=4) == pytest.approx(2 / 4)
    # no path between the law and court components
    assert tiny.path_distance(["t:law"], ["t:court"]) == 1.0
    # beyond the cap
    assert tiny.path_distance(["t:supreme"], ["t:verdict"], cap=2) == 1.0
    assert tiny.path_distance(["t:supreme"], ["t:verdict"], cap=3) == 1.0 * 3 / 3
    # unknown or empty sets
    assert tiny.path_distance([], ["t:law"]) == 1.0
    assert tiny.path_distance(["nope"], ["t:law"]) == 1.0
    with pytest.raises(ValueError):
        tiny.path_distance(["t:law"], ["t:law"], cap=0)


def test_path_distance_matches_networkx(tiny: KnowledgeGraph) -> None:
    import networkx as nx

    und = tiny.g.to_undirected()
    ids = [n.id for n in tiny.nodes()]
    for a in ids:
        for b in ids:
            try:
                d = nx.shortest_path_length(und, a, b)
            except nx.NetworkXNoPath:
                d = None
            expect = 1.0 if d is None or d > 6 else d / 6
            assert tiny.path_distance([a], [b]) == pytest.approx(expect), (a, b)


def test_lca_distance(tiny: KnowledgeGraph) -> None:
    assert tiny.lca_distance("t:contract", "t:contract") == 0.0
    # depths: law 1, civil 2, contract 3 -> lca(contract, civil) = civil: 1 - 2*2/(3+2)
    assert tiny.lca_distance("t:contract", "t:civil") == pytest.approx(1 - 4 / 5)
    assert tiny.index.lca("t:supreme", "t:appellate") == "t:appellate"
    assert tiny.lca_distance("t:contract", "t:supreme") == 1.0  # no common ancestor
    assert tiny.lca_distance("t:contract", "missing") == 1.0
    assert 0.0 <= tiny.lca_distance("t:civil", "t:law") <= 1.0


def test_anchors_and_index_invalidation(tiny: KnowledgeGraph) -> None:
    anchors = tiny.anchors(3)
    assert len(anchors) == 3 and len(set(anchors)) == 3
    assert tiny.anchors(0) == []
    before = tiny.index
    tiny.add_node(Node("t:judge", "judge"))
    tiny.add_edge("t:judge", "part_of", "t:law")
    assert tiny.index is not before
    assert tiny.path_distance(["t:judge"], ["t:contract"]) == pytest.approx(3 / 6)


def test_copy_is_independent(tiny: KnowledgeGraph) -> None:
    other = tiny.copy()
    other.remove_node("t:law")
    assert "t:law" in tiny and "t:law" not in other
    assert other.meta == tiny.meta and other.meta is not tiny.meta
