"""Core types of the corpora package: the domain list, ``Document`` and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.domains import DOMAINS, check_domain

Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")


@dataclass(frozen=True, slots=True)
class Document:
    """One passage of a domain corpus.

    Attributes:
        id: stable identifier ``<source>:<key>`` or ``<source>:<key>#<chunk>`` for a passage cut from
            a longer document; the part before ``#`` names the parent document.
        domain: one of ``DOMAINS``.
        text: plain text, a few hundred words at most.
        source: name of the source in ``corpora.SOURCES``.
        title: the parent document's title (term name, licence name, page title...).
    """

    id: str
    domain: str
    text: str
    source: str
    title: str = ""

    @property
    def parent_id(self) -> str:
        """The id of the document this passage was cut from (the split is decided per parent)."""
        return self.id.split("#", 1)[0]


class CorpusError(RuntimeError):
    """Base class of the errors raised by ``corpora``."""


class SourceMissingError(CorpusError):
    """A raw source needed to build a corpus is not on this machine.

    The message names the source, the path that was looked for and the command that installs it.
    """

    def __init__(self, source: str, looked_for: str, install: str) -> None:
        self.source = source
        self.looked_for = looked_for
        self.install = install
        super().__init__(
            f"corpus source {source!r} is missing (looked for {looked_for}); install it with: {install}"
        )


class AssetVerificationError(CorpusError):
    """A downloaded asset does not have its pinned SHA-256."""


__all__ = ["DOMAINS", "SPLITS", "AssetVerificationError", "CorpusError", "Document", "SourceMissingError",
           "Split", "check_domain"]
