"""Training data for distillation: domain texts -> fixed-length token windows, sampling, curriculum.

* :func:`load_texts` reads a domain corpus (``corpora``) with its train / held-out split.
* :func:`build_vocabulary` picks the tokenizer ids the student keeps (most frequent in the corpus).
* :func:`make_windows` tokenises documents into windows of ``seq_len + 1`` tokens.
* :func:`resistance` scores a text's difficulty (QSEF's ``C_data`` features) -> sample weight.
* samplers (:data:`sampler_resolver`): uniform, difficulty-aware (weights from resistance),
  loss-aware (weights from the student's running per-sample loss).
* :class:`Curriculum`: staged training, general -> domain with rising complexity.
* :class:`TemperatureSchedule`: KD temperature annealing, e.g. 5 -> 1.

    >>> docs = load_texts(Settings(), "law", "train", limit=200)
    >>> windows = make_windows(docs, tokenizer, seq_len=128)
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from core.domains import check_domain
from core.resolver import Resolver

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Text:
    """One training text (a corpus document, flattened to what distillation needs)."""

    id: str
    domain: str
    text: str


def load_texts(settings: Settings, domain: str, split: str = "train", *, limit: int | None = None,
               seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[Text]:
    """Documents of a domain corpus (``corpora.load_corpus``), seeded subsample of ``limit``.

    ``exclude``: document ids left out before subsampling (a validation sample disjoint from training).

    Raises:
        ValueError: unknown domain (names the valid ones).
    """
    from corpora import load_corpus

    check_domain(domain)
    docs = [Text(d.id, d.domain, f"{d.title}. {d.text}" if d.title else d.text) for d in load_corpus(settings, domain, split=split)]
    docs = [d for d in docs if len(d.text.split()) >= 8 and d.id not in exclude]
    if limit is not None and len(docs) > limit:
        g = torch.Generator().manual_seed(seed)
        docs = [docs[i] for i in sorted(torch.randperm(len(docs), generator=g)[:limit].tolist())]
    return docs


# ---------------------------------------------------------------------------------------- vocabulary


def build_vocabulary(token_lists: Sequence[Sequence[int]], size: int, always: Sequence[int] = ()) -> torch.Tensor:
    """The ``size - 1`` tokenizer ids the student keeps (id 0 of the student is "unknown").

    Keeps ``always`` (e.g. end-of-text) plus the most frequent ids; sorted ascending.
    """
    counts = Counter(t for toks in token_lists for t in toks)
    kept = list(dict.fromkeys(always))
    for tok, _ in counts.most_common():
        if len(kept) >= size - 1:
            break
        if tok not in kept:
            kept.append(tok)
    n_pad = size - 1 - len(kept)
    if n_pad > 0:  # a tiny corpus: fill with unused ids so the head keeps its configured size
        used = set(kept)
        kept.extend([i for i in range(n_pad + len(used) + 1) if i not in used][:n_pad])
    return torch.tensor(sorted(kept), dtype=torch.long)


def coverage(token_lists: Sequence[Sequence[int]], kept: torch.Tensor) -> float:
    """Share of tokens that the kept vocabulary covers."""
    s = set(kept.tolist())
    total = sum(len(t) for t in token_lists)
    return sum(1 for toks in token_lists for t in toks if t in s) / max(total, 1)


# ---------------------------------------------------------------------------------------- windows


@dataclass
class Windows:
    """Token windows of ``seq_len + 1`` tokenizer ids; input = ``ids[:, :-1]``, target = ``ids[:, 1:]``.

    Attributes:
        ids: (N, seq_len + 1) tokenizer ids, padded with ``pad_id``.
        valid: (N, seq_len) bool, target position is a real token.
        doc_index: (N,) index into ``texts``; texts: the source texts; resistance: (N,) weights.
    """

    ids: torch.Tensor
    valid: torch.Tensor
    doc_index: torch.Tensor
    texts: list[Text]
    resistance: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __len__(self) -> int:
        return self.ids.shape[0]

    def text_of(self, i: int) -> str:
        return self.texts[int(self.doc_index[i])].text

    def domains(self) -> list[str]:
        return [self.texts[int(j)].domain for j in self.doc_index]


def tokenize(texts: Sequence[Text], tokenizer) -> list[list[int]]:
    """Token ids of each text followed by the end-of-text token."""
    eos = tokenizer.eos_token_id
    enc = tokenizer([t.text for t in texts], add_special_tokens=False)["input_ids"]
    return [list(ids) + ([eos] if eos is not None else []) for ids in enc]


def make_windows(texts: Sequence[Text], token_lists: Sequence[Sequence[int]], seq_len: int, *, pad_id: int = 0,
                 min_tokens: int = 16, max_windows_per_doc: int = 4) -> Windows:
    """Cut each document into non-overlapping windows of ``seq_len + 1`` tokens (last one padded)."""
    rows, valid, doc = [], [], []
    for j, toks in enumerate(token_lists):
        for w, start in enumerate(range(0, max(len(toks) - 1, 1), seq_len)):
            if w >= max_windows_per_doc:
                break
            chunk = list(toks[start:start + seq_len + 1])
            if len(chunk) < min_tokens:
                continue
            n = len(chunk) - 1
            rows.append(chunk + [pad_id] * (seq_len + 1 - len(chunk)))
            valid.append([True] * n + [False] * (seq_len - n))
            doc.append(j)
    if not rows:
        raise ValueError(f"no window of at least {min_tokens} tokens in {len(texts)} texts")
    return Windows(torch.tensor(rows), torch.tensor(valid), torch.tensor(doc), list(texts))


def pack_windows(texts: Sequence[Text], token_lists: Sequence[Sequence[int]], seq_len: int, *,
                 max_windows: int | None = None) -> Windows:
    """Concatenate the documents (each ends with end-of-text) and cut the stream into full windows of
    ``seq_len + 1`` tokens, no padding: short documents (definitions, glossary entries) waste no compute.

    A window's ``doc_index`` is the document of its first target token (its domain and resistance);
    windows never mix splits, since each split is packed on its own. ``max_windows`` keeps that many,
    evenly spaced along the stream (so every domain in it keeps its share).
    """
    stream, owner = [], []
    for j, toks in enumerate(token_lists):
        stream.extend(toks)
        owner.extend([j] * len(toks))
    n = max(0, (len(stream) - 1) // seq_len)
    if n == 0:
        raise ValueError(f"{len(stream)} tokens in {len(texts)} texts: not one window of {seq_len + 1}")
    starts = torch.arange(n) * seq_len
    if max_windows is not None and n > max_windows:  # evenly spaced: every domain of the stream keeps its share
        starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    ids = torch.tensor([stream[s:s + seq_len + 1] for s in starts.tolist()])
    doc = torch.tensor([owner[s + 1] for s in starts.tolist()])
    return Windows(ids, torch.ones(len(starts), seq_len, dtype=torch.bool), doc, list(texts))


# ---------------------------------------------------------------------------------------- difficulty

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENT = re.compile(r"[.!?]+\s")


def _fallback_features(text: str) -> dict[str, float]:
    words = [w.lower() for w in _WORD.findall(text)]
    ttr = len(set(words)) / len(words) if words else 0.0
    n_sent = max(1, len([s for s in _SENT.split(text) if s.strip()]))
    return {"lexical": ttr, "syntax": min(1.0, len(words) / n_sent / 40.0)}


def resistance(text: str) -> float:
    """Difficulty of a text in [0, 1], used as its sample weight (``L_resist``, difficulty sampling).

    Uses QSEF's expert-independent ``C_data`` features (``qsef.components.text_features``: lexical
    diversity, syntax, reasoning markers; KG concept density is not used here). When ``qsef`` is not
    importable it falls back, with a warning, to type-token ratio and sentence length.
    """
    try:
        from qsef.components import text_features
    except ImportError as exc:  # pragma: no cover - qsef ships with the project
        _warn_once(f"qsef.components unavailable ({exc}); resistance from type-token ratio + sentence length")
        f = _fallback_features(text)
    else:
        f = text_features(text)
    return float(sum(f.values()) / len(f))


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


# ---------------------------------------------------------------------------------------- samplers


class Sampler:
    """Draws batches of window indices from the currently eligible ones."""

    def __init__(self, n: int, *, seed: int = 0):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, eligible: torch.Tensor) -> torch.Tensor:
        return torch.ones(eligible.numel())

    def sample(self, eligible: torch.Tensor, batch_size: int) -> torch.Tensor:
        w = self.weights(eligible)
        replace = batch_size > eligible.numel()
        return eligible[torch.multinomial(w, batch_size, replacement=replace, generator=self.generator)]

    def update(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Feedback hook: per-sample losses of the last batch (used by the loss-aware sampler)."""

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class UniformSampler(Sampler):
    """Every eligible window equally likely."""


class DifficultySampler(Sampler):
    """Weights ``(1 - mix) * 1 + mix * R_i / mean(R)``: harder texts (higher resistance) more often."""

    synonyms = ("resistance",)

    def __init__(self, n: int, *, resistance: torch.Tensor, mix: float = 0.5, seed: int = 0):
        super().__init__(n, seed=seed)
        self.r, self.mix = resistance.float().clamp_min(0), mix

    def weights(self, eligible):
        r = self.r[eligible]
        return (1 - self.mix) + self.mix * r / r.mean().clamp_min(1e-8)


class LossSampler(Sampler):
    """Weights from the student's running per-sample loss (hard examples, seen ones updated by EMA)."""

    def __init__(self, n: int, *, mix: float = 0.5, ema: float = 0.5, seed: int = 0):
        super().__init__(n, seed=seed)
        self.mix, self.ema = mix, ema
        self.loss = torch.full((n,), float("nan"))

    def weights(self, eligible):
        loss = self.loss[eligible]
        fill = loss.nanmean() if (~loss.isnan()).any() else torch.tensor(1.0)
        loss = torch.where(loss.isnan(), fill, loss)
        return (1 - self.mix) + self.mix * loss / loss.mean().clamp_min(1e-8)

    def update(self, indices, losses):
        old = self.loss[indices]
        self.loss[indices] = torch.where(old.isnan(), losses, self.ema * old + (1 - self.ema) * losses)


class EpochSampler(Sampler):
    """Every eligible window once per epoch, in a fresh random order each epoch (a shuffled data loader):
    no window repeats before all have been drawn. A change of the eligible set (a curriculum stage) starts
    a new epoch. The remaining order is part of the state (``queue``), so a resumed run draws the same."""

    synonyms = ("shuffle",)

    def __init__(self, n: int, *, seed: int = 0):
        super().__init__(n, seed=seed)
        self.queue = torch.empty(0, dtype=torch.long)
        self._eligible = torch.empty(0, dtype=torch.long)

    def sample(self, eligible: torch.Tensor, batch_size: int) -> torch.Tensor:
        eligible = eligible.long()
        if not torch.equal(eligible, self._eligible):
            self._eligible, self.queue = eligible.clone(), torch.empty(0, dtype=torch.long)
        while self.queue.numel() < batch_size:
            self.queue = torch.cat([self.queue, eligible[torch.randperm(eligible.numel(), generator=self.generator)]])
        out, self.queue = self.queue[:batch_size], self.queue[batch_size:]
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "queue": self.queue.clone(), "eligible": self._eligible.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.queue = state.get("queue", torch.empty(0, dtype=torch.long)).long()
        self._eligible = state.get("eligible", torch.empty(0, dtype=torch.long)).long()


sampler_resolver: Resolver[Sampler] = Resolver(
    Sampler, [UniformSampler, DifficultySampler, LossSampler, EpochSampler], suffix="sampler", default="difficulty",
    kind="sampler")


# ---------------------------------------------------------------------------------------- curriculum


@dataclass
class Stage:
    """One curriculum stage: a share of the steps, the domains it draws from, a complexity cap.

    ``max_quantile`` keeps windows whose resistance is at most that quantile (1.0 = all).
    """

    fraction: float
    domains: list[str] | None = None  # None = every domain in the data
    max_quantile: float = 1.0
    name: str = ""


class Curriculum:
    """Staged training: which windows are eligible at each step.

    The default for a domain expert is general -> domain with rising complexity:
    ``[Stage(0.2, ["general"], 0.5), Stage(0.3, None, 0.6), Stage(0.5, None, 1.0)]``.
    """

    def __init__(self, stages: Sequence[Stage | dict] | None = None):
        stages = [s if isinstance(s, Stage) else Stage(**s) for s in (stages or [Stage(1.0)])]
        total = sum(s.fraction for s in stages)
        if total <= 0:
            raise ValueError("curriculum stages need positive fractions")
        self.stages = [Stage(s.fraction / total, s.domains, s.max_quantile, s.name or f"stage{i}")
                       for i, s in enumerate(stages)]

    @staticmethod
    def default(domain: str) -> Curriculum:
        if domain == "general":
            return Curriculum([Stage(0.4, None, 0.5, "easy"), Stage(0.6, None, 1.0, "all")])
        return Curriculum([Stage(0.2, ["general"], 0.5, "general-easy"), Stage(0.3, None, 0.6, "mixed"),
                           Stage(0.5, None, 1.0, "all")])

    def stage_at(self, step: int, total: int) -> Stage:
        frac, acc = step / max(total, 1), 0.0
        for s in self.stages:
            acc += s.fraction
            if frac < acc - 1e-12:
                return s
        return self.stages[-1]

    def eligible(self, windows: Windows, step: int, total: int) -> torch.Tensor:
        """Indices of the windows the stage at ``step`` may draw from (never empty)."""
        stage = self.stage_at(step, total)
        keep = torch.ones(len(windows), dtype=torch.bool)
        if stage.domains is not None:
            doms = windows.domains()
            keep &= torch.tensor([d in stage.domains for d in doms])
        if stage.max_quantile < 1.0 and windows.resistance.numel():
            cap = torch.quantile(windows.resistance[keep] if keep.any() else windows.resistance, stage.max_quantile)
            keep &= windows.resistance <= cap
        idx = keep.nonzero().flatten()
        return idx if idx.numel() else torch.arange(len(windows))


class TemperatureSchedule:
    """KD temperature from ``start`` to ``end`` over training (``linear``, ``cosine`` or ``exponential``)."""

    def __init__(self, start: float = 5.0, end: float = 1.0, kind: str = "cosine"):
        if kind not in ("linear", "cosine", "exponential", "constant"):
            raise ValueError(f"temperature schedule {kind!r}; allowed: linear, cosine, exponential, constant")
        self.start, self.end, self.kind = start, end, kind

    def __call__(self, step: int, total: int) -> float:
        f = min(max(step / max(total - 1, 1), 0.0), 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * f
        if self.kind == "exponential":
            return self.start * (self.end / self.start) ** f
        return self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * f))
