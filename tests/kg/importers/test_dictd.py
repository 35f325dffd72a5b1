"""kg.importers.dictd: dictd base-64 numbers, ``.index`` rows and ``.dict.dz`` entries."""

from __future__ import annotations

import pytest

from kg.errors import GraphFormatError
from kg.importers import dictd


@pytest.mark.parametrize(("digits", "value"), [("A", 0), ("B", 1), ("/", 63), ("BA", 64), ("K5", 10 * 64 + 57)])
def test_b64_number(digits, value):
    assert dictd.b64_number(digits) == value


def test_b64_number_rejects_other_characters():
    with pytest.raises(ValueError, match=r"invalid dictd base-64 digit '-' in 'A-B'"):
        dictd.b64_number("A-B")


def test_read_index_decodes_rows(dictd_db):
    index, _ = dictd_db("foldoc")
    rows = dictd.read_index(index)
    assert rows[0] == ("00-database-short", 0, 80)
    assert ("recursion", 359, 144) in rows and ("recursive", 359, 144) in rows
    assert len(rows) == 12


def test_read_index_names_file_and_line_of_a_short_row(tmp_path):
    index = tmp_path / "bad.index"
    index.write_text("good\tA\tB\n\nbad\tA\n")
    with pytest.raises(GraphFormatError, match=r"bad\.index:3: dictd index row needs 3 tab-separated fields, got 2") as err:
        dictd.read_index(index)
    assert err.value.line == 3


def test_read_index_names_the_line_of_a_bad_number(tmp_path):
    index = tmp_path / "bad.index"
    index.write_text("word\tA!\tB\n")
    with pytest.raises(GraphFormatError, match=r"bad\.index:1: invalid dictd base-64 digit '!'"):
        dictd.read_index(index)


def test_entries_group_headwords_and_skip_the_database_header(dictd_db):
    index, data = dictd_db("foldoc")
    found = list(dictd.entries(index, data))
    words = [w for w, _ in found]
    assert not any(w.startswith("00-database") for ws in words for w in ws)
    assert ["recursion", "recursive"] in words  # two index rows, one span: one entry
    assert words[0] == ["Lisp"]  # file order
    text = dict((ws[0], t) for ws, t in found)["tail-recursive"]
    assert text == "tail-recursive\n\n   {tail recursion}\n\n"


def test_entries_reject_a_file_that_is_not_gzip(dictd_db, tmp_path):
    index, _ = dictd_db("foldoc")
    plain = tmp_path / "plain.dict.dz"
    plain.write_bytes(b"not compressed")
    with pytest.raises(GraphFormatError, match=r"plain\.dict\.dz: cannot decompress"):
        list(dictd.entries(index, plain))


def test_entries_reject_a_span_past_the_end(dictd_db, tmp_path):
    _, data = dictd_db("foldoc")
    index = tmp_path / "long.index"
    index.write_text("huge\tA\t////\n")
    with pytest.raises(GraphFormatError, match=r"entry 'huge' points past the end of"):
        list(dictd.entries(index, data))
