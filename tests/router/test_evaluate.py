import json

import pytest

from router.evaluate import error_kind, evaluate_decomposition, load_rows


def test_evaluate_decomposition_counts_and_domains(tmp_path, make_router):
    rows = [{"query": "What is a tort?", "domains": ["law"]},
            {"query": "Is ibuprofen safe for a fever, and how do I deduct medical costs on my taxes?",
             "domains": ["medicine", "finance"]},
            {"query": "What is a tort?", "domains": ["law", "code"]}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    router = make_router()
    out = evaluate_decomposition(load_rows(path), router.decomposer, scorer=router.scorer, keep_rows=True)
    assert out["n"] == 3 and out["count_accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert out["domain_set_accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert "domain_set_accuracy_qsef" in out and set(out["paths"]) <= {"fast_path", "clause_splitter"}


def test_load_rows_rejects_bad_rows(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"query": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_rows(p)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]\n", r"bad\.jsonl:1: expected \{"),  # not an object: a ValueError naming the line, not an AttributeError
    ('{"query": "x", "domains": ["law"]}\n\n{"query": \n', r"bad\.jsonl:3: not valid JSON \(Expecting value"),
    ("\n\n", r"bad\.jsonl: no rows"),
])
def test_load_rows_errors_name_file_and_line(tmp_path, text, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_rows(p)


@pytest.mark.parametrize(("subtasks", "pred", "gold", "kind"), [
    (["a", "b"], ["law", "code"], ["code", "law"], "ok"),
    (["a", "b", "c"], ["law", "code", "code"], ["code", "law"], "over_split"),
    (["a"], ["law"], ["code", "law"], "under_split"),
    (["a", "b"], ["law", "law"], ["code", "law"], "wrong_domain"),
])
def test_error_kind(subtasks, pred, gold, kind):
    assert error_kind({"subtasks": subtasks, "pred": pred, "gold": gold}) == kind
