"""The on-disk format: round trip, atomic saves with backup, and malformed files naming file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from core.settings import Settings
from kg import storage
from kg.errors import GraphFormatError
from kg.model import KnowledgeGraph, Node
from kg.storage import read_graph, read_nodes_jsonl, read_triples, write_graph


def test_round_trip(tiny: KnowledgeGraph, tmp_path: Path) -> None:
    tiny.add_node(
        Node(
            "t:odd",
            "tab\there",
            ("new\nline", "back\\slash", "sep\x1fchar"),
            "def\twith tab",
            attrs={"freq": 3},
        )
    )
    path = write_graph(tiny, tmp_path / "law.kg.tsv.gz")
    back = read_graph(path)
    assert back.domain == "law"
    assert {n.id: n for n in back.nodes()} == {n.id: n for n in tiny.nodes()}
    assert {e.triple for e in back.edges()} == {e.triple for e in tiny.edges()}
    assert back.meta["counts"] == {"nodes": 9, "edges": 6}
    assert back.meta["sources"]["test"]["licence"] == "CC0"
    # deterministic bytes (sorted rows, gzip mtime 0)
    again = write_graph(back, tmp_path / "again.kg.tsv.gz")
    assert gzip.decompress(again.read_bytes()) == gzip.decompress(path.read_bytes())


def test_atomic_save_keeps_backup(tiny: KnowledgeGraph, tmp_path: Path) -> None:
    path = tmp_path / "law.kg.tsv.gz"
    write_graph(tiny, path)
    first = path.read_bytes()
    tiny.remove_node("t:verdict")
    write_graph(tiny, path)
    assert path.with_name(path.name + ".bak").read_bytes() == first
    assert read_graph(path).number_of_nodes() == 7
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_save_leaves_target_untouched(tiny: KnowledgeGraph, tmp_path: Path) -> None:
    path = write_graph(tiny, tmp_path / "law.kg.tsv.gz")
    before = path.read_bytes()

    def broken():
        yield "#qsef-kg\t1\n"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        storage.atomic_write(path, broken(), compress=True)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def _write(path: Path, text: str, compress: bool = True) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


GOOD_HEAD = '#qsef-kg\t1\n#meta\t{"domain": "law"}\n'


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("", 1, "empty file"),
        ("hello\n", 1, "not a QSEF graph file"),
        ("#qsef-kg\t9\n", 1, "unsupported format version"),
        (GOOD_HEAD + "N\ta\tlabel\n", 3, "node row needs 7"),
        (GOOD_HEAD + "N\ta\tA\t\t\tsrc\t\nN\ta\tA2\t\t\tsrc\t\n", 4, "duplicate node id"),
        (GOOD_HEAD + "N\ta\tA\t\t\tsrc\t{not json\n", 3, "attrs are not valid JSON"),
        (GOOD_HEAD + "N\ta\tA\t\t\tsrc\t[1]\n", 3, "must be a JSON object"),
        (GOOD_HEAD + "E\ta\tis_a\n", 3, "edge row needs 5"),
        (GOOD_HEAD + "E\ta\t\tb\tsrc\n", 3, "empty head, relation or tail"),
        (GOOD_HEAD + "X\twhat\n", 3, "unknown row kind"),
        ("#qsef-kg\t1\n#meta\t{broken\n", 2, "#meta is not valid JSON"),
        (GOOD_HEAD + "N\ta\tA\\q\t\t\tsrc\t\n", 3, "bad escape"),
        (GOOD_HEAD + "N\ta\tA\t\t\tsrc\t\n#meta\t{}\n", 4, "#meta must come before"),
    ],
)
def test_malformed_graph_files_name_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = _write(tmp_path / "bad.kg.tsv.gz", body)
    with pytest.raises(GraphFormatError, match=message) as err:
        read_graph(path)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}:")


def test_truncated_gzip_is_a_format_error(tiny: KnowledgeGraph, tmp_path: Path) -> None:
    path = write_graph(tiny, tmp_path / "law.kg.tsv.gz")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GraphFormatError, match="cannot read"):
        read_graph(path)


def test_plain_text_graph_and_dangling_edges_are_readable(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "g.kg.tsv",
        GOOD_HEAD + "N\ta\tA\t\t\tsrc\t\nE\ta\tis_a\tghost\tsrc\nE\ta\tlikes\tghost\tsrc\n",
        compress=False,
    )
    g = read_graph(path)
    assert g.dangling() == ["ghost"]
    assert g.number_of_edges() == 2  # kept so that `validate` can report them


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_graph(tmp_path / "none.kg.tsv.gz")


def test_triples_file(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.tsv", "# comment\na\tis_a\tb\nc\tpart_of\td\tmine\n\n", compress=False)
    edges = read_triples(p)
    assert [e.triple for e in edges] == [("a", "is_a", "b"), ("c", "part_of", "d")]
    assert edges[1].source == "mine"
    bad = _write(tmp_path / "bad.tsv", "a\tis_a\tb\nc d e\n", compress=False)
    with pytest.raises(GraphFormatError, match=r"bad.tsv:2: expected 3 or 4"):
        read_triples(bad)
    bad = _write(tmp_path / "bad2.tsv", "a\tloves\tb\n", compress=False)
    with pytest.raises(GraphFormatError, match=r"bad2.tsv:1: unknown relation 'loves'"):
        read_triples(bad)
    bad = _write(tmp_path / "bad3.tsv", "a\tis_a\t \n", compress=False)
    with pytest.raises(GraphFormatError, match=r":1: empty head"):
        read_triples(bad)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "each line must be a JSON object"),
        ('{"label": "x"}', "missing or empty 'id'"),
        ('{"id": "x", "label": ""}', "missing or empty 'label'"),
        ('{"id": "x", "label": "y", "synonyms": "z"}', "'synonyms' must be a list"),
        ('{"id": "x", "label": "y", "attrs": 3}', "'attrs' must be an object"),
    ],
)
def test_nodes_jsonl_errors(tmp_path: Path, line: str, message: str) -> None:
    p = _write(tmp_path / "n.jsonl", '{"id": "ok", "label": "fine"}\n' + line + "\n", compress=False)
    with pytest.raises(GraphFormatError, match=f"n.jsonl:2: {message}"):
        read_nodes_jsonl(p)


def test_loader_prefers_user_copy_and_caches(qsef_home: Path, tiny: KnowledgeGraph) -> None:
    shipped = storage.load_graph(Settings(), "finance")
    assert storage.graph_path(Settings(), "finance") == storage.shipped_path("finance")
    assert storage.load_graph(Settings(), "finance") is shipped  # cached
    tiny.domain = "finance"
    storage.save_graph(Settings(), tiny)
    assert storage.graph_path(Settings(), "finance") == qsef_home / "kg" / "finance.kg.tsv.gz"
    mine = storage.load_graph(Settings(), "finance")
    assert mine is not shipped and mine.number_of_nodes() == 8


def test_unknown_domain(qsef_home: Path) -> None:
    from kg.errors import GraphError

    with pytest.raises(GraphError, match="allowed: medicine, law, code, finance, general"):
        storage.load_graph(Settings(), "astrology")
