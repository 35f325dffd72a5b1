"""Embedding fallback for entity linking: unmatched noun-phrase-like spans -> nearest concept label.

Exact matching misses paraphrases ("heart attack" when the graph says "myocardial infarction", unless
a synonym covers it). For spans the exact matcher left uncovered, candidate phrases — maximal runs of
at least two content words (no stop words, no punctuation, at least 3 letters; the last 4 words of a
longer run, where English puts the head noun) — are embedded with the MiniLM sentence encoder and
compared with the embeddings of concept labels. A phrase links when the best cosine similarity reaches
the threshold (0.85).

Measured on the hand-checked sample (``benchmarks/results/kg_linking_precision.json``) the first
version, which also embedded single words at threshold 0.80, was right for only 80 of 171 mentions:
single words re-found the senses the exact matcher deliberately skips. Multi-word phrases only is the
current rule; it fires rarely on short questions and its precision is not established (2 mentions in
that sample at the new threshold, 1 correct). It is therefore off by default (``link(...,
fallback=True)``).

The label index covers the linkable concepts (at most ``max_nodes``, the most central by PageRank when
the graph is larger) and is cached as safetensors in ``$QSEF_HOME/kg/cache/``, keyed by a hash of
the labels, so it is computed once per graph version.

Example:
    >>> from kg.fallback import embedding_mentions
    >>> embedding_mentions("a heart attack", medicine_graph, [])       # doctest: +SKIP
    [Mention(node_id='HP:0001658', label='Myocardial infarction', ..., method='embedding')]
"""

from __future__ import annotations

import hashlib
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kg.linking import Mention
from kg.text import STOPWORDS, tokenize

if TYPE_CHECKING:
    from core.settings import Settings
    from kg.model import KnowledgeGraph

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.85
DEFAULT_MAX_NODES = 10000
MAX_PHRASE_TOKENS = 4
MIN_PHRASE_TOKENS = 2  # single words are the exact matcher's job (and its ambiguity filters')


def encoder_path(settings: Settings) -> Path:
    """The MiniLM folder from the model store (pulled and verified once)."""
    from core.store import ModelStore

    return Path(ModelStore(settings).ensure("minilm"))


@lru_cache(maxsize=2)
def get_encoder(settings: Settings) -> Any:
    """The MiniLM sentence encoder on CPU (loaded once; imports sentence-transformers)."""
    from sentence_transformers import SentenceTransformer

    from core.settings import configure_torch_threads

    configure_torch_threads(settings)
    return SentenceTransformer(str(encoder_path(settings)), device="cpu")


def encode(settings: Settings, texts: list[str]) -> np.ndarray:
    """L2-normalised float32 embeddings, shape ``(len(texts), 384)``."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vecs = get_encoder(settings).encode(
        texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vecs, dtype=np.float32)


class LabelIndex:
    """Normalised label embeddings of a graph's linkable concepts.

    Attributes:
        ids: node ids, row order of ``matrix``.
        matrix: ``(len(ids), 384)`` float32, rows L2-normalised.
    """

    def __init__(self, graph: KnowledgeGraph, *, settings: Settings, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self.settings = settings
        nodes = [
            n
            for n in graph.nodes()
            if not n.attrs.get("nolink") and not n.attrs.get("synthetic") and n.label.strip()
        ]
        if len(nodes) > max_nodes:
            pr = graph.index.pagerank
            pos = graph.index.pos
            nodes.sort(key=lambda n: -pr[pos[n.id]])
            nodes = nodes[:max_nodes]
        nodes.sort(key=lambda n: n.id)
        self.ids = [n.id for n in nodes]
        labels = [n.label for n in nodes]
        digest = hashlib.sha1(
            "\n".join(f"{i}\t{lb}" for i, lb in zip(self.ids, labels, strict=True)).encode()
        ).hexdigest()[:16]
        self.version = graph.version
        self.matrix = self._load_or_build(graph.domain, digest, labels)

    def _load_or_build(self, domain: str, digest: str, labels: list[str]) -> np.ndarray:
        from safetensors.numpy import load_file, save_file

        from kg.storage import user_dir

        path = user_dir(self.settings) / "cache" / f"labels-{domain}-minilm-{digest}.safetensors"
        if path.is_file():
            data = load_file(str(path))
            if data["matrix"].shape[0] == len(labels):
                return data["matrix"]
        log.info(
            "embedding %d concept labels of the %s graph (once; cached in %s)", len(labels), domain, path
        )
        matrix = encode(self.settings, labels)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {"matrix": matrix},
            str(tmp),
            metadata={"domain": domain, "encoder": "minilm", "labels_sha1": digest},
        )
        tmp.replace(path)
        return matrix

    def nearest(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best row index and cosine similarity per query vector."""
        if len(self.ids) == 0 or len(vectors) == 0:
            return np.zeros(len(vectors), dtype=np.int64), np.zeros(len(vectors), dtype=np.float32)
        sims = vectors @ self.matrix.T  # (Q, N)
        best = sims.argmax(axis=1)
        return best, sims[np.arange(len(vectors)), best]


_INDEXES: dict[tuple[int, Path], LabelIndex] = {}
_LOCK = threading.Lock()


def label_index(graph: KnowledgeGraph, *, settings: Settings, max_nodes: int = DEFAULT_MAX_NODES) -> LabelIndex:
    """The cached :class:`LabelIndex` of a graph (rebuilt when the graph changed)."""
    key = (id(graph), settings.home)
    with _LOCK:
        idx = _INDEXES.get(key)
    if idx is None or idx.version != graph.version:
        idx = LabelIndex(graph, settings=settings, max_nodes=max_nodes)
        with _LOCK:
            _INDEXES[key] = idx
    return idx


def candidate_phrases(
    text: str, mentions: list[Mention], *, min_tokens: int = MIN_PHRASE_TOKENS
) -> list[tuple[int, int, str]]:
    """Noun-phrase-like spans (at least ``min_tokens`` content words) not covered by ``mentions``."""
    out: list[tuple[int, int, str]] = []
    run: list[tuple[int, int, str]] = []

    def flush() -> None:
        if len(run) >= min_tokens:
            tail = run[-MAX_PHRASE_TOKENS:]
            out.append((tail[0][0], tail[-1][1], text[tail[0][0] : tail[-1][1]]))
        run.clear()

    last_end = None
    for start, end, tok in tokenize(text):
        covered = any(m.start < end and start < m.end for m in mentions)
        content = tok.isalpha() and len(tok) >= 3 and tok.lower() not in STOPWORDS
        gap = text[last_end:start] if last_end is not None else ""
        if covered or not content or (gap.strip() and gap.strip() not in ("-",)):
            flush()
        if content and not covered:
            run.append((start, end, tok))
        last_end = end
    flush()
    return out


def embedding_mentions(
    text: str,
    graph: KnowledgeGraph,
    mentions: list[Mention],
    *,
    settings: Settings,
    threshold: float = DEFAULT_THRESHOLD,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> list[Mention]:
    """Mentions found by embedding similarity in the spans ``mentions`` leave uncovered.

    Args:
        text: the text.
        graph: the graph to link to.
        mentions: exact matches already found (their spans are skipped).
        threshold: minimum cosine similarity between phrase and label.
        max_nodes: size cap of the label index (most central concepts first).
        settings: where the encoder and the label cache live.
    """
    phrases = candidate_phrases(text, mentions)
    if not phrases:
        return []
    index = label_index(graph, settings=settings, max_nodes=max_nodes)
    best, sims = index.nearest(encode(settings, [p for _, _, p in phrases]))
    out = []
    for (start, end, phrase), row, sim in zip(phrases, best, sims, strict=True):
        if float(sim) < threshold:
            continue
        node = graph.node(index.ids[int(row)])
        out.append(Mention(node.id, node.label, start, end, round(float(sim), 4), "embedding", phrase))
    return out
