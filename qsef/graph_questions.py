"""Generated everyday questions as labelled seed history: the shipped file, its manifest and its check.

``qsef/data/graph_questions.jsonl`` holds short user-style questions ("How do I ...", "My ...", "Explain ...")
that the router LLM wrote about concepts sampled from each domain's knowledge graph and about passages of
each domain corpus, filtered for form, label leaks, topic, duplicates and any overlap with an evaluation set
(:mod:`router.question_gen` made it; ``python -m router.question_gen`` rebuilds it). Each row carries its
provenance::

    {"text": "How do I ...?", "domain": "code", "origin": "graph", "concept_id": "FOLDOC:...",
     "concept": "...", "source": "foldoc", "style": "howto", "graph": "code.kg.tsv.gz@<sha12>",
     "model": "qwen-0.5b", "prompt_version": "graphq-v1"}

``graph_questions.json`` (the manifest) records the file's sha256, the counts kept and dropped per filter,
the model, prompt version, seeds and wall time. :func:`load_graph_questions` refuses a file whose hash or
rows do not match.

Example:
    >>> rows = load_graph_questions()
    >>> rows[0]["text"], rows[0]["domain"]
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.domains import DOMAINS

DATA_DIR = Path(__file__).resolve().parent / "data"
FILE_NAME = "graph_questions.jsonl"
MANIFEST_NAME = "graph_questions.json"
FIELDS = {"text": str, "domain": str, "origin": str, "concept_id": str, "concept": str, "source": str,
          "style": str, "graph": (str, type(None)), "model": str, "prompt_version": str}


class GraphQuestionsError(ValueError):
    """The generated-questions file is missing, altered or malformed."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def validate_row(row: Any, where: str = "row") -> dict[str, Any]:
    """``row`` if it has exactly the :data:`FIELDS` with their types, a known domain and a non-empty text.

    Raises:
        GraphQuestionsError: naming the first problem found.
    """
    if not isinstance(row, dict):
        raise GraphQuestionsError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if set(row) != set(FIELDS):
        raise GraphQuestionsError(f"{where}: fields {sorted(row)} != expected {sorted(FIELDS)}")
    for key, kind in FIELDS.items():
        if not isinstance(row[key], kind):
            raise GraphQuestionsError(f"{where}: field {key!r} has type {type(row[key]).__name__}")
    if row["domain"] not in DOMAINS:
        raise GraphQuestionsError(f"{where}: domain {row['domain']!r} is not one of {', '.join(DOMAINS)}")
    if not row["text"].strip():
        raise GraphQuestionsError(f"{where}: empty text")
    if row["origin"] not in ("graph", "corpus"):
        raise GraphQuestionsError(f"{where}: origin {row['origin']!r} is not 'graph' or 'corpus'")
    return row


def load_graph_questions(data_dir: Path = DATA_DIR) -> list[dict[str, Any]]:
    """The shipped generated questions, checked against the manifest (sha256, row count) and :data:`FIELDS`.

    Raises:
        GraphQuestionsError: the file or manifest is missing, the hash or count differs, a row is malformed.
    """
    return [dict(r) for r in _load(str(Path(data_dir)))]


@lru_cache(maxsize=4)
def _load(data_dir: str) -> tuple[dict[str, Any], ...]:
    path, manifest_path = Path(data_dir) / FILE_NAME, Path(data_dir) / MANIFEST_NAME
    if not path.is_file() or not manifest_path.is_file():
        raise GraphQuestionsError(f"{path} or its manifest {manifest_path.name} is missing; rebuild it with "
                                  "`python -m router.question_gen`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    digest = file_sha256(path)
    if manifest.get("sha256") != digest:
        raise GraphQuestionsError(f"{path.name} sha256 {digest[:12]}... differs from the manifest's "
                                  f"{str(manifest.get('sha256'))[:12]}...: the file was changed after it was built")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            rows.append(validate_row(json.loads(line), f"{path.name}:{i}"))
    if len(rows) != manifest.get("rows"):
        raise GraphQuestionsError(f"{path.name} has {len(rows)} rows, the manifest says {manifest.get('rows')}")
    return tuple(rows)


def manifest(data_dir: Path = DATA_DIR) -> dict[str, Any]:
    """The manifest of the shipped file (counts, model, prompt version, filters, wall time)."""
    return json.loads((Path(data_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
