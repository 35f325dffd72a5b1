"""The JSONL reader: line numbers as an editor shows them, blank lines skipped, bad JSON named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.jsonl import JSONLError, iter_jsonl


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rows.jsonl"
    p.write_text(text, encoding="utf-8")
    return p


def test_rows_with_line_numbers_counting_blank_lines(tmp_path):
    p = _write(tmp_path, '{"a": 1}\n\n   \n[2, 3]\n"x"\n')
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (4, [2, 3]), (5, "x")]


def test_blank_and_empty_files_yield_nothing(tmp_path):
    assert list(iter_jsonl(_write(tmp_path, ""))) == []
    assert list(iter_jsonl(_write(tmp_path, "\n \n\t\n"))) == []


def test_crlf_and_no_final_newline(tmp_path):
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(b'{"a": 1}\r\n\r\n{"a": 2}')
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_unicode_line_separators_inside_a_row_stay_one_row(tmp_path):
    row = {"text": "one\u2028two\x0cthree\u00e9"}
    p = _write(tmp_path, json.dumps(row, ensure_ascii=False) + "\n" + json.dumps({"b": 2}) + "\n")
    assert list(iter_jsonl(p)) == [(1, row), (2, {"b": 2})]


def test_bad_json_names_file_line_and_problem(tmp_path):
    p = _write(tmp_path, '{"a": 1}\n\n{"a": 2,, }\n{"never": "read"}\n')
    rows = iter_jsonl(p)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(JSONLError) as exc:
        next(rows)
    err = exc.value
    assert (err.path, err.line) == (str(p), 3)
    assert isinstance(err, ValueError) and isinstance(err.error, json.JSONDecodeError)
    assert err.error.msg == "Expecting property name enclosed in double quotes" and err.error.colno == 9
    assert str(err) == f"{p}:3: not valid JSON (Expecting property name enclosed in double quotes at column 9)"
    assert err.__cause__ is err.error


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        list(iter_jsonl(missing))


def test_error_at_the_end_of_a_line_is_placed_on_that_line(tmp_path):
    with pytest.raises(JSONLError, match=r"rows\.jsonl:2: not valid JSON \(Expecting value at column 6\)"):
        list(iter_jsonl(_write(tmp_path, '{"a": 1}\n{"a":\n{"a": 3}\n')))
