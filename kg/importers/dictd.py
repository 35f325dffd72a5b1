"""Reader for dictd databases (``NAME.index`` + ``NAME.dict.dz``), as Debian's dict-* packages install.

The index holds ``headword<TAB>offset<TAB>length`` with offset and length in dictd's base-64 digits; the
``.dict.dz`` file is gzip-compatible (dictzip), so it is decompressed whole.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from kg.errors import GraphFormatError

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def b64_number(s: str) -> int:
    """Decode one dictd base-64 number (most significant digit first)."""
    n = 0
    for c in s:
        if c not in _B64:
            raise ValueError(f"invalid dictd base-64 digit {c!r} in {s!r}")
        n = n * 64 + _B64[c]
    return n


def read_index(path: str | Path) -> list[tuple[str, int, int]]:
    """``(headword, offset, length)`` rows.

    Raises:
        GraphFormatError: naming the file and line of a malformed row.
    """
    path = Path(path)
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise GraphFormatError(
                    path, n, f"dictd index row needs 3 tab-separated fields, got {len(parts)}"
                )
            try:
                out.append((parts[0], b64_number(parts[1]), b64_number(parts[2])))
            except ValueError as exc:
                raise GraphFormatError(path, n, str(exc)) from exc
    return out


def entries(index_path: str | Path, dict_path: str | Path) -> Iterator[tuple[list[str], str]]:
    """Distinct entries as ``(headwords sharing it, entry text)``, in file order; ``00-database-*`` skipped."""
    rows = read_index(index_path)
    try:
        data = gzip.decompress(Path(dict_path).read_bytes())
    except (OSError, EOFError) as exc:
        raise GraphFormatError(dict_path, 0, f"cannot decompress: {exc}") from exc
    by_span: dict[tuple[int, int], list[str]] = {}
    for word, off, length in rows:
        if word.startswith("00-database") or word.startswith("00database"):
            continue
        by_span.setdefault((off, length), []).append(word)
    for (off, length), words in sorted(by_span.items()):
        if off + length > len(data):
            raise GraphFormatError(index_path, 0, f"entry {words[0]!r} points past the end of {dict_path}")
        yield words, data[off : off + length].decode("utf-8", errors="replace")
