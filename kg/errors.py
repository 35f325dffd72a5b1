"""Errors raised by the knowledge-graph package.

They derive from ``ValueError``/``LookupError`` so the ``qsef`` command line turns them into one clear
line on stderr (exit code 2) without knowing this package.
"""

from __future__ import annotations

from pathlib import Path


class GraphError(ValueError):
    """A graph operation was refused (unknown node, unknown relation, a cycle it would create, ...)."""


class GraphFormatError(GraphError):
    """Malformed input file; the message names the file and the 1-based line.

    Attributes:
        path: the file that could not be read.
        line: the 1-based line number (0 when the problem is not tied to a line).
    """

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


class SourceUnavailable(LookupError):
    """An importer's source data is not installed; the message says how to install it."""
