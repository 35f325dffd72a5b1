"""Default profiles are rebuilt exactly when the digest of an input changes (real finance corpus and graph)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import pytest
from qsef_fixtures import HashEncoder

from core.settings import Settings


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    """Settings on a temporary data directory holding a copy of the real finance corpus cache."""
    from corpora import build as corpus_build
    from kg import storage

    real_home = Settings()
    real = corpus_build.cache_path(real_home, "finance")
    if not real.is_file():
        corpus_build.build_corpus(real_home, "finance")
    settings = Settings(home=tmp_path)
    storage.clear_cache()
    corpus_build._MEMO.clear()
    corpus_build.cache_path(settings, "finance").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(real, corpus_build.cache_path(settings, "finance"))
    yield settings
    storage.clear_cache()
    corpus_build._MEMO.clear()


def _build(home: Settings, caplog) -> tuple[object, list[str]]:
    from qsef.profiles import default_profiles

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qsef.profiles"):
        (prof,) = default_profiles(home, encoder=HashEncoder(), domains=["finance"], progress=False)
    return prof, [r.getMessage() for r in caplog.records if r.name == "qsef.profiles"]


def test_rebuilt_only_when_an_input_digest_changes(home: Settings, caplog) -> None:
    from corpora import build as corpus_build
    from kg import storage
    from kg.model import Node

    prof, said = _build(home, caplog)
    assert "building default expert profile" in said
    assert set(prof.meta["inputs"]) == {"build", "corpus", "encoder"} and prof.meta["kg_sha256"]

    _, said = _build(home, caplog)  # nothing changed
    assert said == []

    corpus = corpus_build.cache_path(home, "finance")
    corpus.touch()  # a new mtime with the same bytes is no change
    _, said = _build(home, caplog)
    assert said == []

    graph = storage.load_graph(home, "finance", cache=False)  # a curated graph: new anchors, same profile
    graph.add_node(Node("u:x", "ledger reconciliation", (), "matching two records of an account"))
    storage.save_graph(home, graph)
    prof2, said = _build(home, caplog)
    assert said == [] and prof2.meta["kg_sha256"] != prof.meta["kg_sha256"]
    assert prof2.meta["inputs"] == prof.meta["inputs"]

    rows = gzip.decompress(corpus.read_bytes()).decode().splitlines()
    doc = json.loads(rows[1])
    doc["text"] += " An added sentence about amortisation schedules."
    rows[1] = json.dumps(doc)
    corpus.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    corpus_build._MEMO.clear()
    prof3, said = _build(home, caplog)
    assert "rebuilding expert profile (inputs changed)" in said and "building default expert profile" in said
    assert prof3.meta["inputs"]["corpus"] != prof.meta["inputs"]["corpus"]
    assert prof3.meta["inputs"]["encoder"] == prof.meta["inputs"]["encoder"]


def test_profiles_built_before_digests_are_adopted_not_rebuilt(home: Settings, caplog) -> None:
    from qsef.profiles import ExpertProfile, profiles_dir

    prof, _ = _build(home, caplog)
    folder = profiles_dir(home, "hash") / "finance"
    meta = json.loads((folder / "profile.json").read_text())
    del meta["meta"]["inputs"]
    (folder / "profile.json").write_text(json.dumps(meta))
    again, said = _build(home, caplog)
    assert said == [] and again.meta["inputs"] == prof.meta["inputs"]
    assert ExpertProfile.load(folder).meta["inputs"] == prof.meta["inputs"]  # recorded on disk


def test_build_shows_progress(home: Settings, capsys) -> None:
    from qsef.profiles import BUILD_STAGES, default_profiles

    default_profiles(home, encoder=HashEncoder(), domains=["finance"], progress=True)
    err = capsys.readouterr().err
    assert "expert profiles" in err and "finance: encode 64/1000" in err
    assert f"{len(BUILD_STAGES)}/{len(BUILD_STAGES)}" in err
