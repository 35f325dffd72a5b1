"""``qsef kg ...`` end to end through the real command line, on isolated data directories.

Every curation command is exercised on its failure paths with malformed files: the command must exit
with code 2 and one line naming the file and line, and the stored graph must stay byte-identical.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from api.cli import main
from core.settings import Settings
from kg import storage
from kg.model import KnowledgeGraph, Node

D = "finance"  # the smallest shipped graph keeps these tests fast


def qsef(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["kg", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stored(qsef_home: Path) -> Path:
    """A user copy of the finance graph, saved once (so a .bak exists after the next save)."""
    graph = storage.load_graph(Settings(), D, cache=False)
    return storage.save_graph(Settings(), graph)


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _graph_file(path: Path, rows: str) -> Path:
    path.write_bytes(gzip.compress(('#qsef-kg\t1\n#meta\t{"domain": "finance"}\n' + rows).encode()))
    return path


# ----------------------------------------------------------------------- stats
def test_stats_json(capsys, qsef_home: Path) -> None:
    code, out, _ = qsef(capsys, "stats", "--json", "--domain", "finance", "--domain", "law")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"finance", "law"}
    assert data["law"]["nodes"] > 5000 and data["law"]["nodes_by_source"]["courts"] > 2000
    assert data["finance"]["file"].endswith("kg/data/finance.kg.tsv.gz")


@pytest.mark.slow
def test_stats_json_all_shipped_graphs(capsys, qsef_home: Path) -> None:
    code, out, _ = qsef(capsys, "stats", "--json")
    data = json.loads(out)
    assert code == 0 and set(data) == {"medicine", "law", "code", "finance", "general"}
    assert all(d["nodes"] > 2000 and d["edges"] > 2000 for d in data.values())
    assert data["general"]["nodes"] > 100000 and data["medicine"]["nodes"] > 80000


def test_stats_malformed_file(capsys, tmp_path: Path) -> None:
    bad = _graph_file(tmp_path / "bad.kg.tsv.gz", "N\tonly\tthree\n")
    code, _, err = qsef(capsys, "stats", "--file", str(bad))
    assert code == 2 and f"{bad}:3:" in err


# -------------------------------------------------------------------- validate
def test_validate_shipped_graph_is_clean(capsys, qsef_home: Path) -> None:
    code, out, _ = qsef(capsys, "validate", "--domain", D, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True


@pytest.mark.slow
def test_validate_without_target_checks_every_installed_graph(capsys, qsef_home: Path) -> None:
    """No ``--domain``: every domain's graph in use (the user copy of finance, the shipped rest)."""
    graph = storage.load_graph(Settings(), D, cache=False)
    graph.add_node(Node("u:dup", "Money", (), graph.node("WN:money.n.01").definition, source="wordnet"))
    storage.save_graph(Settings(), graph)
    code, out, _ = qsef(capsys, "validate", "--json")
    report = json.loads(out)
    ok = {g["graph"]: g["ok"] for g in report["graphs"]}
    assert code == 1 and report["ok"] is False
    assert ok == {"medicine": True, "law": True, "code": True, "finance": False, "general": True}
    code, out, _ = qsef(capsys, "validate")
    assert code == 1 and "finance: INVALID: duplicate_label" in out and "general: ok" in out


def test_validate_finds_every_kind_of_problem(capsys, tmp_path: Path) -> None:
    rows = (
        "N\ta\tcourt\t\tdef\ts\t\n"
        "N\tb\tCourt\t\tdef\ts\t\n"  # duplicate of a (same label and definition)
        "N\tc\tcourt\t\tother\ts\t\n"  # same label, other definition: a warning
        "N\td\t \t\t\ts\t\n"  # empty label
        "N\te\tjudge\t\t\ts\t\n"
        "E\ta\tis_a\te\ts\n"
        "E\te\tis_a\ta\ts\n"  # cycle
        "E\ta\tloves\te\ts\n"  # unknown relation
        "E\ta\tpart_of\tghost\ts\n"  # dangling
    )
    path = _graph_file(tmp_path / "g.kg.tsv.gz", rows)
    code, out, _ = qsef(capsys, "validate", "--file", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["counts"] == {
        "dangling_edge": 1,
        "isa_cycle": 1,
        "empty_label": 1,
        "unknown_relation": 1,
        "duplicate_node": 1,
        "duplicate_label": 1,
    }


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("not a graph\n", 1, "not a QSEF graph file"),
        ('#qsef-kg\t1\n#meta\t{"domain": "finance"}\nE\ta\tis_a\n', 3, "edge row needs 5"),
        ("#qsef-kg\t2\n", 1, "unsupported format version"),
    ],
)
def test_validate_malformed_file_names_file_and_line(
    capsys, tmp_path: Path, content: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.kg.tsv"
    _write(path, content)
    code, _, err = qsef(capsys, "validate", "--file", str(path))
    assert code == 2 and f"{path}:{line}: {message}" in err


# ------------------------------------------------------------------------- add
def test_add_node_and_edge(capsys, stored: Path) -> None:
    code, out, _ = qsef(
        capsys,
        "add",
        "--domain",
        D,
        "--node",
        "user:crypto",
        "--label",
        "cryptocurrency",
        "--synonym",
        "crypto",
        "--definition",
        "digital currency",
    )
    assert code == 0 and "added 1 node" in out
    code, _, _ = qsef(capsys, "add", "--domain", D, "--edge", "user:crypto", "is_a", "WN:currency.n.01")
    assert code == 0
    graph = storage.load_graph(Settings(), D)
    assert graph.node("user:crypto").synonyms == ("crypto",)
    assert graph.has_edge("user:crypto", "is_a", "WN:currency.n.01")
    assert stored.with_name(stored.name + ".bak").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--edge", "WN:money.n.01", "loves", "WN:tax.n.01"], "unknown relation 'loves'"),
        (["--edge", "WN:money.n.01", "is_a", "user:nowhere"], "no node 'user:nowhere'"),
        (["--edge", "KG:finance", "is_a", "WN:money.n.01"], "would close a cycle"),
        (["--node", "WN:money.n.01", "--label", "money"], "already exists"),
        (["--node", "user:x"], "--node needs --label"),
        ([], "nothing to add"),
    ],
)
def test_add_refusals_leave_graph_untouched(capsys, stored: Path, argv: list[str], message: str) -> None:
    before = _bytes(stored)
    code, _, err = qsef(capsys, "add", "--domain", D, *argv)
    assert code == 2 and message in err
    assert _bytes(stored) == before


@pytest.mark.parametrize(
    ("flag", "name", "content", "expected"),
    [
        ("--triples", "t.tsv", "WN:money.n.01\tis_a\tWN:tax.n.01\nbroken line\n", "t.tsv:2: expected 3 or 4"),
        (
            "--triples",
            "t.tsv",
            "WN:money.n.01\tresembles\tWN:tax.n.01\n",
            "t.tsv:1: unknown relation 'resembles'",
        ),
        ("--nodes", "n.jsonl", '{"id": "u:1", "label": "one"}\n{"id": "u:2"\n', "n.jsonl:2: invalid JSON"),
        ("--nodes", "n.jsonl", '{"id": "u:1", "label": ""}\n', "n.jsonl:1: missing or empty 'label'"),
    ],
)
def test_add_from_malformed_files(
    capsys, stored: Path, tmp_path: Path, flag: str, name: str, content: str, expected: str
) -> None:
    before = _bytes(stored)
    path = _write(tmp_path / name, content)
    code, _, err = qsef(capsys, "add", "--domain", D, flag, str(path))
    assert code == 2 and expected in err and str(path) in err
    assert _bytes(stored) == before


def test_add_from_files(capsys, stored: Path, tmp_path: Path) -> None:
    nodes = _write(
        tmp_path / "n.jsonl", '{"id": "u:1", "label": "stablecoin", "synonyms": ["stable coin"]}\n'
    )
    triples = _write(tmp_path / "t.tsv", "u:1\tis_a\tWN:currency.n.01\n")
    assert qsef(capsys, "add", "--domain", D, "--nodes", str(nodes), "--triples", str(triples))[0] == 0
    assert storage.load_graph(Settings(), D).has_edge("u:1", "is_a", "WN:currency.n.01")


# ---------------------------------------------------------------------- remove
def test_remove(capsys, stored: Path) -> None:
    assert (
        qsef(
            capsys, "remove", "--domain", D, "--edge", "WN:money.n.01", "is_a", "WN:medium_of_exchange.n.01"
        )[0]
        == 0
    )
    assert not storage.load_graph(Settings(), D).has_edge("WN:money.n.01", "is_a", "WN:medium_of_exchange.n.01")
    assert qsef(capsys, "remove", "--domain", D, "--node", "WN:money.n.01")[0] == 0
    assert "WN:money.n.01" not in storage.load_graph(Settings(), D)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--node", "user:nothing"], "no node 'user:nothing'"),
        (["--edge", "WN:tax.n.01", "is_a", "WN:money.n.01"], "no edge"),
        ([], "nothing to remove"),
    ],
)
def test_remove_refusals(capsys, stored: Path, argv: list[str], message: str) -> None:
    before = _bytes(stored)
    code, _, err = qsef(capsys, "remove", "--domain", D, *argv)
    assert code == 2 and message in err and _bytes(stored) == before


def test_remove_from_malformed_triples(capsys, stored: Path, tmp_path: Path) -> None:
    before = _bytes(stored)
    path = _write(tmp_path / "r.tsv", "WN:money.n.01\tis_a\n")
    code, _, err = qsef(capsys, "remove", "--domain", D, "--triples", str(path))
    assert code == 2 and f"{path}:1:" in err and _bytes(stored) == before
    # a valid file whose second triple does not exist: nothing is removed at all
    path = _write(
        tmp_path / "r2.tsv",
        "WN:money.n.01\tis_a\tWN:medium_of_exchange.n.01\nWN:tax.n.01\tis_a\tWN:money.n.01\n",
    )
    code, _, err = qsef(capsys, "remove", "--domain", D, "--triples", str(path))
    assert code == 2 and "no edge" in err and _bytes(stored) == before


# ----------------------------------------------------------------------- merge
def test_merge_graph_file(capsys, stored: Path, tmp_path: Path) -> None:
    other = KnowledgeGraph(D)
    other.add_node(Node("u:robo", "robo-advisor", ("robo advisor",)))
    other.add_node(Node("WN:money.n.01", "money", ("dough",)))
    other.add_edge("u:robo", "related", "WN:money.n.01")
    path = storage.write_graph(other, tmp_path / "extra.kg.tsv.gz")
    code, out, _ = qsef(capsys, "merge", path.as_posix(), "--domain", D, "--json")
    result = json.loads(out)["merged"][str(path)]
    assert (
        code == 0
        and result["nodes_added"] == 1
        and result["nodes_updated"] == 1
        and result["edges_added"] == 1
    )
    assert "dough" in storage.load_graph(Settings(), D).node("WN:money.n.01").synonyms


def test_merge_malformed_file(capsys, stored: Path, tmp_path: Path) -> None:
    before = _bytes(stored)
    bad = _graph_file(tmp_path / "bad.kg.tsv.gz", "N\tu:1\tone\t\t\ts\t\nN\tu:1\tagain\t\t\ts\t\n")
    code, _, err = qsef(capsys, "merge", str(bad), "--domain", D)
    assert code == 2 and f"{bad}:4: duplicate node id" in err and _bytes(stored) == before


def test_import_file_and_source_errors(capsys, stored: Path, tmp_path: Path) -> None:
    before = _bytes(stored)
    code, _, err = qsef(capsys, "import", "no-such-source", "--domain", D)
    assert code == 2 and "registered importer" in err
    bad = _write(tmp_path / "bad.tsv", "a\tb\n")
    code, _, err = qsef(capsys, "import", str(bad), "--domain", D)
    assert code == 2 and f"{bad}:1:" in err
    code, _, err = qsef(capsys, "import", "hpo", "--domain", D)  # wrong domain for the importer
    assert code == 2 and "does not build the finance domain" in err
    assert _bytes(stored) == before
    good = _write(tmp_path / "good.tsv", "WN:tax.n.01\trelated\tWN:money.n.01\n")
    assert qsef(capsys, "import", str(good), "--domain", D)[0] == 0


# ---------------------------------------------------------------------- dedupe
def test_dedupe(capsys, qsef_home: Path) -> None:
    graph = storage.load_graph(Settings(), D, cache=False)
    graph.add_node(
        Node(
            "u:dup", "Money", ("cash money",), "the most common medium of exchange; functions as legal tender"
        )
    )
    graph.add_edge("u:dup", "related", "WN:tax.n.01")
    storage.save_graph(Settings(), graph)
    code, out, _ = qsef(capsys, "dedupe", "--domain", D, "--dry-run", "--json")
    groups = json.loads(out)["groups"]
    assert code == 0 and ["WN:money.n.01", "u:dup"] in groups
    code, out, _ = qsef(capsys, "dedupe", "--domain", D, "--json")
    assert code == 0
    merged = storage.load_graph(Settings(), D)
    assert "u:dup" not in merged and "cash money" in merged.node("WN:money.n.01").synonyms
    assert merged.has_edge("WN:money.n.01", "related", "WN:tax.n.01")


# ---------------------------------------------------------------------- export
def test_export_tsv_and_json(capsys, qsef_home: Path) -> None:
    code, out, _ = qsef(capsys, "export", "--domain", D, "--format", "tsv")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("# finance graph") and len(lines) > 3000
    assert all(len(line.split("\t")) == 4 for line in lines[1:])
    code, out, _ = qsef(capsys, "export", "--domain", D, "--format", "json", "--out", "finance.json")
    path = qsef_home / "kg" / "exports" / "finance.json"
    data = json.loads(path.read_text())
    assert (
        code == 0
        and len(data["nodes"]) > 2000
        and data["edges"][0].keys() == {"head", "relation", "tail", "source"}
    )


@pytest.mark.slow
def test_export_refuses_paths_outside_the_data_dir(capsys, qsef_home: Path, tmp_path: Path) -> None:
    code, _, err = qsef(capsys, "export", "--domain", D, "--out", str(tmp_path / "outside.tsv"))
    assert code == 2 and "outside the data directory" in err
    code, _, err = qsef(capsys, "export", "--domain", D, "--out", "../../escape.tsv")
    assert code == 2 and "outside the data directory" in err


def test_export_malformed_file(capsys, tmp_path: Path) -> None:
    bad = _graph_file(tmp_path / "bad.kg.tsv.gz", "N\tu\tlabel\t\t\ts\tnot-json\n")
    code, _, err = qsef(capsys, "export", "--file", str(bad))
    assert code == 2 and f"{bad}:3: node attrs are not valid JSON" in err


# ------------------------------------------------------------------------ diff
def test_diff(capsys, stored: Path) -> None:
    assert qsef(capsys, "add", "--domain", D, "--node", "u:new", "--label", "new thing")[0] == 0
    assert (
        qsef(
            capsys, "remove", "--domain", D, "--edge", "WN:money.n.01", "is_a", "WN:medium_of_exchange.n.01"
        )[0]
        == 0
    )
    code, out, _ = qsef(capsys, "diff", f"shipped:{D}", D, "--json")
    d = json.loads(out)
    assert code == 0
    assert d["nodes_added"] == ["u:new"] and d["edges_removed"] == [
        ["WN:money.n.01", "is_a", "WN:medium_of_exchange.n.01"]
    ]
    assert d["summary"]["nodes_removed"] == 0


def test_diff_malformed_file(capsys, tmp_path: Path, qsef_home: Path) -> None:
    bad = _graph_file(tmp_path / "bad.kg.tsv.gz", "Z\tz\n")
    code, _, err = qsef(capsys, "diff", D, str(bad))
    assert code == 2 and f"{bad}:3: unknown row kind" in err


# ------------------------------------------------------------------------ link
def test_link_json(capsys, qsef_home: Path) -> None:
    code, out, _ = qsef(capsys, "link", "The central bank cut interest rates.", "--domain", D, "--json")
    data = json.loads(out)
    assert code == 0 and {m["node_id"] for m in data["mentions"]} >= {
        "WN:central_bank.n.01",
        "WN:interest_rate.n.01",
    }
    assert 0 < data["concept_density"] <= 1
