"""The graph load cache (kg.snapshot): a snapshot reads back the very graph a parse gives, a damaged or
stale one is rebuilt with a warning, and an edited graph file is never served from an old snapshot."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from kg import linking, storage
from kg.model import KnowledgeGraph, Node
from kg.snapshot import GraphSnapshot, SnapshotError
from qsef.components import KGAccess

TEXTS = [
    "The Supreme Court of California heard the appeal; the tenant sued under the MIT license.",
    "A tort is a civil wrong; the court of appeals reversed the verdict.",
    "Write a Python function that reverses a linked list with a hash table.",
]


def _fresh(domain: str) -> KnowledgeGraph:
    """The domain's graph parsed from its file, no cache of any kind involved."""
    return storage.read_graph(storage.graph_path(Settings(), domain), domain=domain)


def _snapshot_file(domain: str) -> Path:
    path = storage.graph_path(Settings(), domain)
    return storage.snapshot_path(storage.user_dir(Settings()) / "cache", domain, storage.sha256_file(path))


def _load_again(domain: str) -> KnowledgeGraph:
    """What a new process gets: the in-process cache forgotten, the disk cache left in place."""
    storage.clear_cache()
    return storage.load_graph(Settings(), domain)


def _assert_same_graph(a: KnowledgeGraph, b: KnowledgeGraph) -> None:
    assert (a.domain, a.meta, len(a), a.number_of_nodes(), a.number_of_edges()) == \
        (b.domain, b.meta, len(b), b.number_of_nodes(), b.number_of_edges())
    assert sorted(n.to_dict().items().__repr__() for n in a.nodes()) == \
        sorted(n.to_dict().items().__repr__() for n in b.nodes())
    assert sorted(a.edges(), key=lambda e: (e.head, e.relation, e.tail)) == \
        sorted(b.edges(), key=lambda e: (e.head, e.relation, e.tail))
    assert [n.id for n in a.nodes()] == [n.id for n in b.nodes()]  # file order kept
    assert {u: dict(nb) for u, nb in a.g.adj.items()} == {u: dict(nb) for u, nb in b.g.adj.items()}


@pytest.mark.parametrize("domain", ["law", "code"])
def test_snapshot_round_trip_equals_a_fresh_parse(qsef_home: Path, domain: str) -> None:
    """Shipped graphs: the first load parses and writes the snapshot, the next one is served from it."""
    first = storage.load_graph(Settings(), domain)
    assert first.snapshot is None and _snapshot_file(domain).is_file()
    again = _load_again(domain)
    assert again is not first and again.snapshot is not None  # deferred: no networkx graph built yet
    fresh = _fresh(domain)
    # lookups, sizes and the query index come from the arrays ...
    some = [n.id for n in fresh.nodes()][:: max(1, fresh.number_of_nodes() // 50)]
    assert [again.get(i) for i in some] == [fresh.get(i) for i in some]
    assert all(i in again for i in some) and "no:such-node" not in again and again.get("no:such-node") is None
    anchors = fresh.anchors(10)
    for a in some[:10]:
        assert again.path_distance([a], anchors, cap=6) == fresh.path_distance([a], anchors, cap=6)
        assert again.lca_distance(a, anchors[0]) == fresh.lca_distance(a, anchors[0])
    assert again.anchors(10) == anchors
    assert again.snapshot is not None  # ... still without building the networkx graph
    _assert_same_graph(again, fresh)  # walking it builds the graph: equal to the parsed one
    assert again.snapshot is None
    assert again.origin == first.origin and again.cache_dir == first.cache_dir


def test_scoring_signals_from_a_snapshot_equal_a_fresh_parse(qsef_home: Path) -> None:
    """What `qsef score` reads from the graphs — linked concepts, D_kg distances, concept density."""
    domains = ("law", "code")
    for d in domains:
        linking.get_linker(storage.load_graph(Settings(), d))  # writes the snapshots and the linker caches
    storage.clear_cache()
    cached = KGAccess(Settings(), domains=domains)
    fresh_graphs = {d: _fresh(d) for d in domains}
    fresh = KGAccess(loader=fresh_graphs.__getitem__, domains=domains)
    for text in TEXTS:
        for d in domains:
            anchors = tuple(fresh_graphs[d].anchors(20))
            assert cached.concepts(text, d) == fresh.concepts(text, d)
            assert cached.distance(cached.concepts(text, d), d, anchors) == \
                fresh.distance(fresh.concepts(text, d), d, anchors)
            assert cached.density(text, d) == fresh.density(text, d)
    assert all(cached.graph(d).snapshot is not None for d in domains)  # never needed the networkx graph


def test_escapes_attrs_and_dangling_edges_survive(qsef_home: Path) -> None:
    """A user graph with every awkward field: tabs, newlines and the synonym separator inside names."""
    g = KnowledgeGraph("finance", meta={"sources": {"test": {"title": "t\tab"}}})
    g.add_node(Node("x:a", "a\tb", ("syn\x1fwith sep", "line\nbreak"), "def \\ slash", source="s\r1",
                    attrs={"pos": "n", "counts": [3, 1]}))
    g.add_node(Node("x:b", "bond", (), "", attrs={"nolink": True}))
    g.add_node(Node("x:c", "coupon", attrs={"pos": "n", "counts": [3, 1]}))
    g.add_edge("x:a", "is_a", "x:b", "user")
    g.add_edge("x:a", "related", "x:b", "user")
    g.add_edge("x:c", "see_also", "x:missing", "importer", allow_dangling=True)
    storage.save_graph(Settings(), g)
    storage.load_graph(Settings(), "finance")
    again = _load_again("finance")
    assert again.snapshot is not None
    assert again.get("x:a") == Node("x:a", "a\tb", ("syn\x1fwith sep", "line\nbreak"), "def \\ slash", "finance",
                                    "s\r1", {"pos": "n", "counts": [3, 1]})
    assert "x:missing" not in again and len(again) == 4 and again.number_of_nodes() == 3
    assert again.path_length(["x:c"], ["x:missing"]) == 1
    _assert_same_graph(again, _fresh("finance"))
    assert again.dangling() == ["x:missing"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle", "other-format", "empty"])
def test_damaged_snapshot_is_rebuilt_with_a_warning(qsef_home: Path, caplog: pytest.LogCaptureFixture,
                                                    damage: str) -> None:
    storage.load_graph(Settings(), "finance")
    path = _snapshot_file("finance")
    sound = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(sound[: len(sound) // 2])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 64)
    elif damage == "pickle":  # an object array: np.load(allow_pickle=False) must refuse it, never unpickle
        with open(path, "wb") as fh:
            np.savez(fh, header=np.array([{"format": 1}], dtype=object))
    elif damage == "other-format":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["header"] = np.frombuffer(b'{"format": 999}', dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    else:
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="kg.storage"):
        graph = _load_again("finance")
    assert any("rebuilding graph snapshot" in r.getMessage() for r in caplog.records)
    _assert_same_graph(graph, _fresh("finance"))
    digest = storage.sha256_file(storage.graph_path(Settings(), "finance"))
    GraphSnapshot.load(path, source_sha256=digest, domain="finance")  # written afresh: sound again
    assert _load_again("finance").snapshot is not None


def test_inconsistent_arrays_are_refused(qsef_home: Path) -> None:
    """An index pointing past its column is caught when reading, not as a crash while scoring."""
    storage.load_graph(Settings(), "finance")
    path = _snapshot_file("finance")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["tail"] = arrays["tail"].copy()
    arrays["tail"][0] = len(arrays["ids.offsets"]) + 5
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    digest = storage.sha256_file(storage.graph_path(Settings(), "finance"))
    with pytest.raises(SnapshotError, match="tail index out of range"):
        GraphSnapshot.load(path, source_sha256=digest, domain="finance")
    with pytest.raises(SnapshotError, match="another graph file"):
        GraphSnapshot.load(path, source_sha256="0" * 64, domain="finance")


def test_changed_graph_file_invalidates_the_snapshot(qsef_home: Path, tiny: KnowledgeGraph,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    tiny.domain = "law"
    storage.save_graph(Settings(), tiny)
    old_snapshot = _snapshot_file("law")
    assert storage.load_graph(Settings(), "law").number_of_nodes() == 8
    assert old_snapshot.is_file()
    edited = storage.load_graph(Settings(), "law").copy()
    edited.add_node(Node("t:appeal", "appeal", (), "asking a higher court to review"))
    storage.save_graph(Settings(), edited)  # a new file: another digest, so another snapshot name
    new_snapshot = _snapshot_file("law")
    assert new_snapshot != old_snapshot
    new_snapshot.write_bytes(old_snapshot.read_bytes())  # even the old content under the new name is refused
    with caplog.at_level(logging.WARNING, logger="kg.storage"):
        graph = _load_again("law")
    assert any("rebuilding graph snapshot" in r.getMessage() for r in caplog.records)
    assert graph.number_of_nodes() == 9 and graph.get("t:appeal") is not None
    again = _load_again("law")
    assert again.snapshot is not None and again.get("t:appeal") is not None


def test_a_deferred_graph_can_be_edited(qsef_home: Path) -> None:
    storage.load_graph(Settings(), "finance")
    graph = _load_again("finance")
    assert graph.snapshot is not None
    n = graph.number_of_nodes()
    graph.add_node(Node("u:new", "brand-new instrument"))  # builds the networkx graph, then edits it
    assert graph.snapshot is None and graph.number_of_nodes() == n + 1 and "u:new" in graph
    assert graph.origin is not None and graph.origin[1] != graph.version  # caches derived from the file no longer apply
    assert [m.node_id for m in linking.link("a brand-new instrument", graph)] == ["u:new"]


def test_damaged_linker_cache_branch_is_compiled_again(qsef_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The linker's disk cache keeps each first token's branch as JSON text; a damaged one never breaks linking."""
    graph = storage.load_graph(Settings(), "law")
    fresh = linking.Linker(graph)
    path = linking._cache_path(graph)
    linking._build_linker(graph)  # compiles and writes the cache
    cached = linking._build_linker(graph)
    assert all(isinstance(v, str) for v in cached._trie.values())  # nothing parsed yet
    cached._trie["court"] = "{not json"
    with caplog.at_level(logging.WARNING, logger="kg.linking"):
        for text in TEXTS[:2]:
            assert cached.link(text) == fresh.link(text)
    assert any("damaged linker cache" in r.getMessage() for r in caplog.records)
    assert not path.exists()  # the next process compiles and writes it again
