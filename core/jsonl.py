"""Reading JSONL files: one JSON value per line, blank lines ignored.

Every row file of the project (routing, decomposition and answer-grading sets) is JSONL. This module
reads the lines and parses them; what a row must contain is the caller's to check, with the line
number it is handed:

    >>> from core.jsonl import JSONLError, iter_jsonl
    >>> rows = [check_row(obj, n) for n, obj in iter_jsonl("rows.jsonl")]
    Traceback (most recent call last):
    core.jsonl.JSONLError: rows.jsonl:3: not valid JSON (Expecting ',' delimiter at column 28)

Lines are split on ``\\n`` (and ``\\r\\n`` / ``\\r``) only, so a row whose strings hold a raw U+2028 or
form feed, which ``json.dumps(..., ensure_ascii=False)`` writes as is, stays one row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["JSONLError", "iter_jsonl"]


class JSONLError(ValueError):
    """A line of a JSONL file that is not valid JSON: ``file:line: not valid JSON (problem at column c)``.

    Attributes:
        path: the file, as given.
        line: its 1-based line number (blank lines counted).
        error: the :class:`json.JSONDecodeError`; ``error.msg`` is the problem alone, ``error.colno`` its column.
    """

    def __init__(self, path: str | Path, line: int, error: json.JSONDecodeError) -> None:
        self.path, self.line, self.error = str(path), line, error
        super().__init__(f"{path}:{line}: not valid JSON ({error.msg} at column {error.colno})")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """The parsed non-blank lines of a UTF-8 JSONL file, read one line at a time.

    Args:
        path: the file.

    Yields:
        ``(line_number, value)``: the 1-based line number, counting blank lines, so that it is the number
        an editor shows; ``value`` is whatever JSON the line holds (the caller checks it is an object). A
        file with no non-blank line yields nothing: callers that need rows say so in their own terms.

    Raises:
        JSONLError: at the first line that is not valid JSON, naming file and line.
        FileNotFoundError: when the file does not exist (raised on the first ``next``).
        UnicodeDecodeError: when the file is not UTF-8.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\n"))  # the newline would move the column of an error
            except json.JSONDecodeError as exc:
                raise JSONLError(path, n, exc) from exc
            yield n, value
