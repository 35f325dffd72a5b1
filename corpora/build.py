"""Build, cache and load the processed domain corpora.

A domain corpus is built once from its sources (``corpora.sources.SOURCES``), cut into
passages, de-duplicated, put in a fixed pseudo-random order and written to
``$QSEF_HOME/corpora/cache/<domain>.jsonl.gz`` atomically (temporary file + rename). The first line
is a header (format version, counts, sources); every other line is one ``Document``.

``load_corpus`` reads the cache and builds it on first use; a cache that is unreadable, truncated
or from an older format is rebuilt, with a warning in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.domains import DOMAINS, check_domain
from core.settings import Settings
from corpora.base import SPLITS, CorpusError, Document
from corpora.sources import Source, sources_for
from corpora.textproc import chunk_text, word_count

log = logging.getLogger(__name__)

CACHE_FORMAT = 3
"""Bump when the processing changes: caches of an older format are rebuilt (so are caches whose
list of sources differs from ``SOURCES``)."""

HELDOUT_PERCENT = 10
"""Share of parent documents (by hash of their id) that goes to the held-out split."""

MIN_PASSAGE_WORDS = 5


class CorpusCacheError(CorpusError):
    """A cache file exists but cannot be read (corrupt, truncated, wrong format)."""


# --------------------------------------------------------------------------- split and order


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def split_of(doc_id: str) -> str:
    """``"train"`` or ``"heldout"`` for a document id; decided by its parent id, so all passages of
    one source document fall on the same side."""
    parent = doc_id.split("#", 1)[0]
    return "heldout" if _hash(parent) % 100 < HELDOUT_PERCENT else "train"


# --------------------------------------------------------------------------- building


def cache_dir(settings: Settings) -> Path:
    return settings.path("corpora", "cache")


def cache_path(settings: Settings, domain: str) -> Path:
    """Path of the cached corpus of ``domain``."""
    return cache_dir(settings) / f"{check_domain(domain)}.jsonl.gz"


def _passages(settings: Settings, source: Source) -> Iterator[Document]:
    for raw in source.reader(settings):
        chunks = [c for c in chunk_text(raw.text) if word_count(c) >= MIN_PASSAGE_WORDS]
        for i, chunk in enumerate(chunks):
            doc_id = f"{source.name}:{raw.key}" + (f"#{i}" if len(chunks) > 1 else "")
            yield Document(doc_id, source.domain, chunk, source.name, raw.title)


def build_documents(settings: Settings, domain: str) -> list[Document]:
    """Read every source of ``domain`` and return its passages (de-duplicated, in cache order).

    Raises:
        SourceMissingError: when a source is not installed (the message says how to install it).
    """
    seen: set[bytes] = set()
    docs: list[Document] = []
    for source in sources_for(check_domain(domain)):
        t0 = time.perf_counter()
        n = 0
        for doc in _passages(settings, source):
            key = hashlib.sha1(" ".join(doc.text.lower().split()).encode("utf-8")).digest()
            if key in seen:  # identical passages (licence variants, repeated boilerplate)
                continue
            seen.add(key)
            docs.append(doc)
            n += 1
        log.info("corpus source read", extra={"source": source.name, "passages": n,
                                               "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate document ids in the {domain} corpus")
    # fixed pseudo-random order: `max_docs` then samples across sources instead of taking the first
    docs.sort(key=lambda d: (_hash(d.id), d.id))
    return docs


def _header(domain: str, docs: list[Document]) -> dict[str, Any]:
    per_source: dict[str, dict[str, int]] = {}
    for d in docs:
        s = per_source.setdefault(d.source, {"docs": 0, "words": 0})
        s["docs"] += 1
        s["words"] += word_count(d.text)
    return {
        "_meta": {
            "format": CACHE_FORMAT,
            "domain": domain,
            "n_docs": len(docs),
            "n_words": sum(s["words"] for s in per_source.values()),
            "source_names": [s.name for s in sources_for(domain)],
            "sources": per_source,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }


def _write_atomic(path: Path, header: dict[str, Any], docs: list[Document]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
        ):
            gz.write((json.dumps(header, ensure_ascii=False) + "\n").encode("utf-8"))
            for d in docs:
                row = {"id": d.id, "domain": d.domain, "text": d.text, "source": d.source, "title": d.title}
                gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _build_lock(settings: Settings, domain: str) -> Iterator[None]:
    with (cache_dir(settings) / f".{domain}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_corpus(settings: Settings, domain: str, *, force: bool = False) -> Path:
    """Build the cache of one domain (skipped when a valid cache exists, unless ``force``).

    Returns:
        the cache path.

    Raises:
        SourceMissingError: when a source is missing; nothing is written then.
    """
    path = cache_path(settings, domain)
    with _build_lock(settings, domain):
        if not force:
            try:
                read_header(path)
                return path
            except FileNotFoundError:
                pass
            except CorpusCacheError as exc:
                log.warning("rebuilding corpus cache", extra={"domain": domain, "reason": str(exc)})
        t0 = time.perf_counter()
        docs = build_documents(settings, domain)
        header = _header(domain, docs)
        _write_atomic(path, header, docs)
        _forget(path)
        log.info("corpus built", extra={"domain": domain, "docs": len(docs),
                                         "words": header["_meta"]["n_words"],
                                         "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    return path


def build_all(settings: Settings, *, force: bool = False) -> dict[str, Path]:
    """Build every domain's cache (idempotent unless ``force``); returns domain -> cache path."""
    return {domain: build_corpus(settings, domain, force=force) for domain in DOMAINS}


# --------------------------------------------------------------------------- reading


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    if meta.get("format") != CACHE_FORMAT:
        raise CorpusCacheError(
            f"corpus cache {path} has format {meta.get('format')}, expected {CACHE_FORMAT}"
        )
    expected = (
        [s.name for s in sources_for(meta.get("domain", ""))] if meta.get("domain") in DOMAINS else None
    )
    if meta.get("source_names") != expected:
        raise CorpusCacheError(
            f"corpus cache {path} was built from {meta.get('source_names')}, expected {expected}"
        )


def read_header(path: Path) -> dict[str, Any]:
    """The header of a cache file.

    Raises:
        FileNotFoundError: no cache yet.
        CorpusCacheError: unreadable or of another format.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            meta = json.loads(fh.readline())["_meta"]
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise CorpusCacheError(
            f"corpus cache {path} is unreadable ({exc.__class__.__name__}: {exc})"
        ) from exc
    _check_meta(path, meta)
    return meta


def _read_cache(path: Path) -> tuple[Document, ...]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            meta = json.loads(fh.readline())["_meta"]
            _check_meta(path, meta)
            docs = tuple(Document(**json.loads(line)) for line in fh)
    except CorpusCacheError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise CorpusCacheError(
            f"corpus cache {path} is unreadable ({exc.__class__.__name__}: {exc})"
        ) from exc
    if len(docs) != meta.get("n_docs"):
        raise CorpusCacheError(
            f"corpus cache {path} holds {len(docs)} documents, its header says {meta.get('n_docs')}"
        )
    return docs


_MEMO: dict[tuple[str, int, int], tuple[Document, ...]] = {}


def _forget(path: Path) -> None:
    for stale in [k for k in _MEMO if k[0] == str(path)]:
        del _MEMO[stale]


def _load_cached(settings: Settings, domain: str) -> tuple[Document, ...]:
    """All documents of a domain, memoised per cache file version (path, size, mtime)."""
    path = cache_path(settings, domain)
    for attempt in range(2):
        if not path.exists():
            build_corpus(settings, domain)
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)  # per file: two data directories never share
        if key in _MEMO:
            return _MEMO[key]
        try:
            docs = _read_cache(path)
        except CorpusCacheError as exc:
            if attempt:
                raise
            log.warning("rebuilding corpus cache", extra={"domain": domain, "reason": str(exc)})
            build_corpus(settings, domain, force=True)
            continue
        _forget(path)
        _MEMO[key] = docs
        return docs
    raise AssertionError("unreachable")


def load_corpus(settings: Settings, domain: str, split: str = "train", max_docs: int | None = None) -> list[Document]:
    """Passages of one domain corpus, built and cached on first use.

    Args:
        domain: one of ``DOMAINS``.
        split: ``"train"`` (about 90% of source documents), ``"heldout"`` (the rest) or ``"all"``.
        max_docs: keep only the first ``max_docs`` passages of the fixed pseudo-random order (a
            deterministic sample across sources); ``None`` keeps all.

    Returns:
        a new list of ``Document`` (frozen; the list is yours to change).

    Raises:
        ValueError: unknown domain or split, or a negative ``max_docs``.
        SourceMissingError: when the cache must be built and a source is missing.
    """
    check_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if max_docs is not None and max_docs < 0:
        raise ValueError(f"max_docs must be >= 0 or None, got {max_docs}")
    docs = _load_cached(settings, domain)
    if split != "all":
        docs = tuple(d for d in docs if split_of(d.id) == split)
    return list(docs if max_docs is None else docs[:max_docs])


def corpus_stats(settings: Settings, *, build: bool = False) -> dict[str, dict[str, Any]]:
    """Per-domain counts from the cache headers: docs, words, per-source docs/words.

    Args:
        build: build missing caches first; otherwise a missing domain is reported as ``None``.
    """
    out: dict[str, Any] = {}
    for domain in DOMAINS:
        path = cache_path(settings, domain)
        if build:
            build_corpus(settings, domain)
        try:
            out[domain] = read_header(path)
        except (FileNotFoundError, CorpusCacheError):
            out[domain] = None
    return out
