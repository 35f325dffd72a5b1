"""The shipped generated questions: schema, hash, no evaluation overlap; the seed history takes them per the
``router.graph_questions`` setting (real MMLU rows, real encoder)."""

from __future__ import annotations

import collections
import json
import shutil

import pytest

from core.domains import DOMAINS
from core.settings import Settings
from qsef.graph_questions import (
    DATA_DIR,
    FILE_NAME,
    MANIFEST_NAME,
    GraphQuestionsError,
    file_sha256,
    load_graph_questions,
    manifest,
)


def _settings(on: bool) -> Settings:
    s = Settings()
    return s.model_copy(update={"router": s.router.model_copy(update={"graph_questions": on})})


def test_shipped_file_matches_its_manifest_and_schema():
    rows = load_graph_questions()
    m = manifest()
    assert m["sha256"] == file_sha256(DATA_DIR / FILE_NAME) and m["rows"] == len(rows)
    assert collections.Counter(r["domain"] for r in rows) == {d: n for d, n in m["per_domain"].items() if n}
    assert set(m["per_domain"]) == set(DOMAINS)
    assert all(r["prompt_version"] == m["prompt_version"] and r["model"] == m["model"] for r in rows)
    assert all((r["graph"] is None) == (r["origin"] == "corpus") for r in rows)
    assert (DATA_DIR / FILE_NAME).stat().st_size < 2_000_000
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)


def test_shipped_file_holds_no_evaluation_row():
    from router.question_gen import eval_texts, normalise

    ev = {normalise(t) for t in eval_texts(Settings())}
    assert not [r["text"] for r in load_graph_questions() if normalise(r["text"]) in ev]


def test_altered_or_malformed_file_is_refused(tmp_path):
    for name in (FILE_NAME, MANIFEST_NAME):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    path = tmp_path / FILE_NAME
    path.write_text(path.read_text(encoding="utf-8").replace("?", "!", 1), encoding="utf-8")
    with pytest.raises(GraphQuestionsError, match="sha256"):
        load_graph_questions(tmp_path)
    bad = {"text": "What is a lien?", "domain": "astrology"}
    path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
    m = json.loads((tmp_path / MANIFEST_NAME).read_text())
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**m, "sha256": file_sha256(path), "rows": 1}))
    with pytest.raises(GraphQuestionsError, match="fields"):
        load_graph_questions(tmp_path)
    (tmp_path / MANIFEST_NAME).unlink()
    with pytest.raises(GraphQuestionsError, match="missing"):
        load_graph_questions(tmp_path)


@pytest.mark.slow
def test_seed_history_includes_the_questions_only_when_switched_on():
    from corpora import load_mmlu
    from qsef.history import seed_embeddings, seed_history, seed_rows

    generated = load_graph_questions()
    off, on = _settings(False), _settings(True)
    n_mmlu = len(load_mmlu(off, split="history"))
    rows_off, rows_on = seed_rows(off), seed_rows(on)
    assert len(rows_off) == n_mmlu and len(rows_on) == n_mmlu + len(generated)
    assert rows_on[n_mmlu:] == [{"text": r["text"], "domain": r["domain"]} for r in generated]
    assert seed_rows(on, graph_questions=False) == rows_off  # the argument wins over the setting

    class P:  # an expert profile as seed_history reads it
        def __init__(self, d):
            self.name, self.domain = f"{d}-expert", d

    experts = [P(d) for d in DOMAINS]
    h_off, h_on = seed_history(experts, settings=off), seed_history(experts, settings=on)
    assert h_off.emb.shape[0] == n_mmlu and h_on.emb.shape[0] == len(rows_on)
    assert list(h_on.labels[n_mmlu:]) == [r["domain"] for r in generated]
    emb = seed_embeddings(on)
    assert emb.shape == h_on.emb.shape

    from qsef.encoder import get_encoder

    probe = get_encoder(on).encode([generated[0]["text"]])[0]
    assert float(emb[n_mmlu] @ probe) > 0.999  # row order: MMLU first, then the generated questions
