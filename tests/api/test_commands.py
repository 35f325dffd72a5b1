"""The router's command-line commands, run in-process through ``api.cli.main`` on a temporary home."""

import json
import re

import pytest

from api.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    yield tmp_path


def test_experts_list_add_show_remove(capsys):
    assert main(["experts", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert {n for n, e in listed.items() if e["enabled"]} == {"medicine", "law", "code", "finance", "general"}
    shipped = {n for n, e in listed.items() if not e["enabled"]}  # the shipped LoRA adapters: present, off
    assert shipped and all(n.endswith("-lora") and listed[n]["metrics"]["heldout_ppl"] > 0 for n in shipped)
    name = sorted(shipped)[0]
    assert main(["experts", "enable", name]) == 0 and main(["experts", "show", name]) == 0
    assert json.loads(capsys.readouterr().out)["enabled"] is True
    assert main(["experts", "disable", "nosuch"]) == 2
    assert main(["experts", "add", "tax", "--domain", "finance", "--backend", "openai",
                 "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--cost", "2"]) == 0
    capsys.readouterr()
    assert main(["experts", "show", "tax"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"] == 2.0
    assert main(["experts", "remove", "tax"]) == 0
    assert main(["experts", "remove", "tax"]) == 2  # unknown expert: a clear error, exit 2
    assert "unknown expert 'tax'" in capsys.readouterr().err


def test_experts_add_rejects_incomplete_backend(capsys):
    assert main(["experts", "add", "x", "--domain", "law", "--backend", "openai"]) == 2
    assert "base_url" in capsys.readouterr().err


def test_eval_decompose_splitter_json(tmp_path, capsys):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"query": "What is a tort? And how do I sort a list in Python?",
                             "domains": ["law", "code"]}) + "\n")
    assert main(["eval", "decompose", str(f), "--splitter", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {**out, "n": 1, "count_accuracy": 1.0, "domain_set_accuracy": 1.0}


def test_route_needs_a_query(capsys):
    assert main(["route", "  "]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "resolver"), [
    (["route", "q", "--strategy"], "qsef.selection:selection_strategy_resolver"),
    (["route", "q", "--llm"], "router.llm:router_llm_resolver"),
    (["serve", "--router-llm"], "router.llm:router_llm_resolver"),
    (["experts", "add", "x", "--domain", "law", "--backend"], "experts.backends:backend_resolver"),
    (["score", "t", "--ablate"], "qsef.components:component_resolver"),
    (["eval", "routing", "f.jsonl", "--method"], "qsef.eval.routing:routing_method_resolver"),
])
def test_cli_choices_come_from_the_resolvers(argv, resolver, capsys):
    """A bad name is a usage error that lists exactly the resolver's names (synonyms included)."""
    import importlib

    module, name = resolver.split(":")
    r = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "no-such-thing"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'no-such-thing'" in err
    listed = err.split("choose from", 1)[1]
    assert set(re.findall(r"'([^']+)'", listed)) in (set(r.choices), set(r.names))


def test_a_damaged_registry_row_can_be_listed_around_and_removed(home, capsys):
    import sqlite3

    assert main(["experts", "list", "--json"]) == 0
    capsys.readouterr()
    db = sqlite3.connect(home / "router" / "experts.sqlite", isolation_level=None)
    db.execute("UPDATE experts SET backend_kwargs = '{broken' WHERE name = 'law'")
    db.close()
    assert main(["experts", "list", "--json"]) == 0
    assert "law" not in {e["name"] for e in json.loads(capsys.readouterr().out)}
    assert main(["experts", "show", "law"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["experts", "remove", "law"]) == 0
    assert main(["experts", "list", "--json"]) == 0
    left = {e["name"] for e in json.loads(capsys.readouterr().out) if not e["name"].endswith("-lora")}
    assert left == {"medicine", "code", "finance", "general"}


def test_experts_add_refuses_paths_outside_the_home(capsys):
    assert main(["experts", "add", "x", "--domain", "law", "--path", "/etc"]) == 2
    assert "outside the data directory" in capsys.readouterr().err


def test_removing_every_expert_survives_a_restart(capsys):
    assert main(["experts", "list", "--json"]) == 0
    for e in json.loads(capsys.readouterr().out):
        assert main(["experts", "remove", e["name"]]) == 0
    assert main(["experts", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_serve_refuses_several_workers_on_sqlite(capsys, monkeypatch):
    monkeypatch.delenv("QSEF_DATABASE_URL", raising=False)
    assert main(["serve", "--workers", "4"]) == 2
    err = capsys.readouterr().err
    assert "--workers 4 needs the shared store: set QSEF_DATABASE_URL" in err and "Traceback" not in err


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://u@h/db", "unsupported scheme 'mysql'"),
    ("postgresql://u@h", "names no database"),
])
def test_a_bad_database_url_is_one_line_naming_the_setting(capsys, monkeypatch, url, expected):
    monkeypatch.setenv("QSEF_DATABASE_URL", url)
    assert main(["experts", "list"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "QSEF_DATABASE_URL" in err and err.count("\n") == 1


def test_an_unreachable_database_at_start_up_is_one_line(capsys, monkeypatch, tmp_path):
    from core.pglocal import _free_port

    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    monkeypatch.setenv("QSEF_DATABASE_URL", f"postgresql://qsef@127.0.0.1:{_free_port()}/qsef")
    assert main(["serve", "--workers", "2", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "database unavailable" in err and "fix QSEF_DATABASE_URL" in err and err.count("\n") == 1
