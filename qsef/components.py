"""The QSEF components — one registry, each one a small class that can be switched off.

Every component maps a batch of T sub-task texts and E experts to a matrix ``(T, E)`` in [0, 1]
(text-only components such as ``C_data`` broadcast a ``(T,)`` column). The engine combines them
(SPEC §2)::

    D  = w1·D_emb + w2·D_kg
    R  = w_d·C_data + w_m·C_model + w_s·C_sparsity
    TE = exp(-(k1·D + k2·R))

Components never fall back silently: when a knowledge graph or a BM25 index is missing they use a
documented neutral value and add a flag (e.g. ``kg_missing:law``) to the texts they scored.

Example:
    >>> comp = component_resolver.make("d_emb")
    >>> sorted(component_resolver.names)
    ['c_data', 'c_model', 'c_sparsity', 'd_emb', 'd_kg']
"""

from __future__ import annotations

import logging
import math
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.domains import DOMAINS
from core.resolver import Resolver
from qsef.history import HistoryProvider
from qsef.profiles import ExpertProfile

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: The ``D_kg`` distances of SPEC §2: shortest path, lowest common ancestor, KG-embedding cosine.
KG_DISTANCE_VARIANTS = ("path", "lca", "embedding")


# ---------------------------------------------------------------------------------------------
# Knowledge-graph access (lazy, cached, degrades with a flag)
# ---------------------------------------------------------------------------------------------
class KGAccess:
    """Loads domain graphs on demand and caches entity-linking results per (text, domain).

    Args:
        settings: where the graphs and KG embeddings live (``kg.load_graph(settings, domain)``).
        loader: ``domain -> graph`` instead (tests); raising means "graph missing".
        cap: shortest-path cap L for ``D_kg``.
        domains: the graphs a text's concepts N_t are linked against for concept density and the
            missing-concept share — a fixed set, so a score never depends on which other experts are
            in the batch.
        cache_size: linked (text, domain) pairs kept.
    """

    def __init__(self, settings: Settings | None = None, *, loader: Any = None, cap: int = 6,
                 cache_size: int = 100_000, domains: Sequence[str] = DOMAINS) -> None:
        if settings is None and loader is None:
            raise ValueError("KGAccess needs settings (to find the graphs) or a loader")
        self.settings = settings
        self._loader = loader
        self.cap = cap
        self.domains = tuple(domains)
        self.cache_size = cache_size
        self._graphs: dict[str, Any] = {}
        self._missing: dict[str, str] = {}
        self._links: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
        self._spans: dict[tuple[str, str], frozenset[str]] = {}
        self._mentions: dict[tuple[str, str], list[Any]] = {}
        self._dist: OrderedDict[tuple[tuple[str, ...], str, tuple[str, ...], str], float] = OrderedDict()
        self._density: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._embeddings: dict[str, Any] = {}

    def graph(self, domain: str | None) -> Any | None:
        if domain is None:
            return None
        if domain in self._graphs:
            return self._graphs[domain]
        if domain in self._missing:
            return None
        try:
            if self._loader is None:
                import kg

                settings = self.settings
                self._loader = lambda d: kg.load_graph(settings, d)
            g = self._loader(domain)
        except Exception as exc:
            self._missing[domain] = str(exc)[:200]
            log.warning("knowledge graph unavailable; D_kg degraded", extra={"domain": domain, "error": str(exc)[:200]})
            return None
        self._graphs[domain] = g
        return g

    def _link(self, text: str, domain: str) -> tuple[tuple[str, ...], frozenset[str]]:
        key = (text, domain)
        if key in self._links:
            self._links.move_to_end(key)
            return self._links[key], self._spans[key]
        import kg

        g = self.graph(domain)
        mentions = kg.link(text, g) if g is not None else []
        nodes = tuple(dict.fromkeys(m.node_id for m in mentions))
        spans = frozenset(text[m.start:m.end].lower() for m in mentions)
        self._links[key] = nodes
        self._spans[key] = spans
        self._mentions[key] = list(mentions)
        while len(self._links) > self.cache_size:
            old, _ = self._links.popitem(last=False)
            self._spans.pop(old, None)
            self._mentions.pop(old, None)
        return nodes, spans

    def concepts(self, text: str, domain: str) -> tuple[str, ...]:
        """Node ids of ``domain``'s graph linked in ``text`` (empty if the graph is missing)."""
        return self._link(text, domain)[0]

    def surface_concepts(self, text: str, domain: str) -> frozenset[str]:
        """Lower-cased surface forms of the mentions linked in ``text``."""
        return self._link(text, domain)[1]

    def distance(self, nodes: tuple[str, ...], domain: str, anchors: tuple[str, ...], *,
                 variant: str = "path") -> float:
        """Distance in [0, 1] from a text's concepts ``nodes`` to an expert's ``anchors`` (1 when either is empty).

        Variants (SPEC §2):
            ``path``: shortest-path length over any relation, divided by the cap (1 beyond it);
            ``lca``: the closest pair's lowest-common-ancestor distance in the is_a hierarchy,
            ``1 - 2·depth(lca) / (depth(a) + depth(b))``;
            ``embedding``: ``(1 - cos) / 2`` between the mean KG-embedding (TransE, pykeen) of each set;
            1 when the domain has no trained embeddings (see :meth:`embeddings`).
        """
        if not nodes or not anchors:
            return 1.0
        key = (nodes, domain, anchors, variant)
        if key in self._dist:
            return self._dist[key]
        g = self.graph(domain)
        if g is None:
            d = 1.0
        elif variant == "path":
            d = float(g.path_distance(list(nodes), list(anchors), cap=self.cap))
        elif variant == "lca":
            d = min((g.lca_distance(a, b) for a in nodes for b in anchors), default=1.0)
        elif variant == "embedding":
            import kg

            emb = self.embeddings(domain)
            d = 1.0 if emb is None else float(kg.embedding_distance(nodes, anchors, emb))
        else:
            raise ValueError(f"unknown D_kg variant {variant!r}; choose from {KG_DISTANCE_VARIANTS}")
        self._dist[key] = float(d)
        if len(self._dist) > self.cache_size:
            self._dist.popitem(last=False)
        return float(d)

    def embeddings(self, domain: str) -> Any | None:
        """The domain graph's trained KG embeddings, or ``None`` when none are shipped or trained."""
        if domain not in self._embeddings:
            try:
                import kg

                if self.settings is None:
                    raise LookupError("no settings to find KG embeddings with")
                self._embeddings[domain] = kg.load_embeddings(self.settings, domain)
            except Exception as exc:  # missing/corrupt file: D_kg's embedding variant degrades, flagged
                log.warning("KG embeddings unavailable", extra={"domain": domain, "error": str(exc)[:200]})
                self._embeddings[domain] = None
        return self._embeddings[domain]

    def density(self, text: str, domain: str) -> float | None:
        """Share of the text's tokens linked to ``domain``'s graph, ``None`` if the graph is missing."""
        key = (text, domain)
        if key not in self._density:
            g = self.graph(domain)
            if g is None:
                return None
            import kg

            self._link(text, domain)  # reuse the cached mentions instead of linking again
            self._density[key] = float(kg.concept_density(text, g, mentions=self._mentions.get(key)))
            if len(self._density) > self.cache_size:
                self._density.popitem(last=False)
        return self._density[key]


class NoKG(KGAccess):
    """A KG access with no graphs at all (tests, or ``--ablate`` of every graph part)."""

    def __init__(self) -> None:
        super().__init__(loader=lambda domain: None)

    def graph(self, domain: str | None) -> Any | None:
        if domain is not None and domain not in self._missing:
            self._missing[domain] = "knowledge graphs disabled"
        return None

    def _link(self, text: str, domain: str) -> tuple[tuple[str, ...], frozenset[str]]:
        return (), frozenset()


# ---------------------------------------------------------------------------------------------
# Scoring context: the batch every component reads from
# ---------------------------------------------------------------------------------------------
@dataclass
class ScoringContext:
    """One scoring batch.

    Attributes:
        texts: T sub-task texts.
        embeddings: ``(T, dim)`` unit vectors ``E(t)``.
        experts: E profiles.
        kg: graph access (cached across batches by the engine).
        history: feedback history for ``C_model`` (optional).
        settings: the engine's settings (where default corpora and profiles live); ``None`` when the
            caller supplies everything (tests, custom fleets).
        flags: per text, the degradations that affected its scores.
        cache: shared intermediates (e.g. ``C_data`` reused by ``C_model``).
        live_load: ``(E,)`` live load of each expert's server in [0, 1] (NaN: not measured), read by
            ``C_model``; the caller measures it (``experts.load``) — QSEF itself does no I/O.
    """

    texts: list[str]
    embeddings: np.ndarray
    experts: list[ExpertProfile]
    kg: KGAccess
    history: HistoryProvider | None = None
    settings: Settings | None = None
    flags: list[set[str]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    live_load: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.flags:
            self.flags = [set() for _ in self.texts]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.texts), len(self.experts)

    def flag_all(self, flag: str) -> None:
        for f in self.flags:
            f.add(flag)

    def kg_domains(self) -> list[str]:
        """The fixed graph domains texts are linked against (independent of the candidate experts)."""
        return list(self.kg.domains)


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------
class Component(ABC):
    """A QSEF component: ``compute(ctx) -> (T, E)`` values in [0, 1].

    ``term`` says where the engine adds it: ``"D"`` (semantic distance) or ``"R"`` (resistance).
    """

    name: ClassVar[str]
    term: ClassVar[str]

    @abstractmethod
    def compute(self, ctx: ScoringContext) -> np.ndarray:
        """Values ``(T, E)`` in [0, 1] for the batch."""


class EmbeddingDistance(Component):
    """``D_emb``: embedding distance from a text to an expert's domain, one matrix product per batch.

    SPEC §2's ``D_emb = (1 - cos(E(t), c_e)) / 2`` uses the domain centroid ``c_e`` alone. A domain is
    seldom one blob, so when a profile carries sub-topic ``prototypes`` the distance to the nearest
    sub-topic is mixed in::

        D_emb = (1 - λ)·(1 - cos(E(t), c_e)) / 2 + λ·(1 - smax_τ cos(E(t), p)) / 2

    where ``smax_τ = τ·log mean_p exp(cos/τ)`` is a smooth maximum over the prototypes p (between their
    mean and their max). ``prototype_weight`` λ = 0 gives SPEC's formula exactly; an expert without
    prototypes uses its centroid as its only prototype.

    Args:
        prototype_weight: λ in [0, 1].
        temperature: τ of the smooth maximum (0.05 suits MiniLM cosines).
    """

    name = "d_emb"
    term = "D"

    def __init__(self, prototype_weight: float = 0.5, temperature: float = 0.05) -> None:
        if not 0.0 <= prototype_weight <= 1.0:
            raise ValueError(f"prototype_weight must lie in [0, 1], got {prototype_weight}")
        self.prototype_weight = prototype_weight
        self.temperature = temperature
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, ...], list[Any], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def matrices(self, experts: Sequence[ExpertProfile]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(E, dim)`` centroids, ``(E·P, dim)`` prototypes (padded to P per expert; an expert without
        prototypes has its centroid as its only one) and the ``(E, P)`` mask of real prototypes.

        Rebuilt only when the expert list changes; built and swapped under a lock, so server threads
        scoring different candidate lists never mix one list's centroids with another's prototypes.
        """
        key = tuple(id(e.centroid) for e in experts) + tuple(id(e.prototypes) for e in experts)
        with self._lock:
            if self._cached is not None and self._cached[0] == key:
                return self._cached[2]
            centroids = np.stack([e.centroid for e in experts]).astype(np.float32)
            sets = [e.prototypes if e.prototypes is not None else e.centroid[None, :] for e in experts]
            p, dim = max(len(x) for x in sets), centroids.shape[1]
            stacked = np.zeros((len(sets), p, dim), dtype=np.float32)
            mask = np.zeros((len(sets), p), dtype=bool)
            for j, x in enumerate(sets):
                stacked[j, : len(x)] = x
                mask[j, : len(x)] = True
            out = (centroids, stacked.reshape(-1, dim), mask)
            refs = [(e.centroid, e.prototypes) for e in experts]  # keeps the ids in the key from being reused
            self._cached = (key, refs, out)
            return out

    def compute(self, ctx: ScoringContext) -> np.ndarray:
        if "d_emb_matrices" not in ctx.cache:
            ctx.cache["d_emb_matrices"] = self.matrices(ctx.experts)
        centroids, flat, mask = ctx.cache["d_emb_matrices"]
        cos = ctx.embeddings @ centroids.T  # (T, E)
        if self.prototype_weight > 0:
            t, (e, p) = len(ctx.texts), mask.shape
            pc = (ctx.embeddings @ flat.T).reshape(t, e, p)  # (T, E, P)
            pc = np.where(mask[None], pc, -np.inf)
            top = pc.max(axis=2)
            tau = self.temperature
            smax = top + tau * np.log(np.exp((pc - top[..., None]) / tau).sum(axis=2) / mask.sum(axis=1)[None, :])
            cos = (1.0 - self.prototype_weight) * cos + self.prototype_weight * smax
        return np.clip((1.0 - cos) / 2.0, 0.0, 1.0).astype(np.float32)


class KGDistance(Component):
    """``D_kg``: distance from the text's linked concepts N_t to the expert's anchors A_e.

    N_t is linked against the expert's own graph. ``variant`` picks the distance (see
    :meth:`KGAccess.distance`): ``path`` (default, capped shortest path), ``lca`` (is_a hierarchy) or
    ``embedding`` (TransE vectors; flag ``kg_embeddings_missing:<domain>`` when a domain has none).
    1 when nothing links. A missing graph gives ``missing_value`` and the flag ``kg_missing:<domain>``.
    """

    name = "d_kg"
    term = "D"

    def __init__(self, missing_value: float = 1.0, variant: str = "path") -> None:
        if variant not in KG_DISTANCE_VARIANTS:
            raise ValueError(f"unknown D_kg variant {variant!r}; choose from {KG_DISTANCE_VARIANTS}")
        self.missing_value = missing_value
        self.variant = variant

    def compute(self, ctx: ScoringContext) -> np.ndarray:
        t, e = ctx.shape
        out = np.ones((t, e), dtype=np.float32)
        # experts sharing a graph and an anchor list (many per domain in a large fleet) are computed once
        groups: dict[tuple[str, int], list[int]] = {}
        for j, ex in enumerate(ctx.experts):
            groups.setdefault((ex.kg_domain or ex.domain, id(ex.kg_anchors)), []).append(j)
        by_key: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for (domain, _), cols in groups.items():
            by_key.setdefault((domain, tuple(ctx.experts[cols[0]].kg_anchors)), []).extend(cols)
        for (domain, anchors), cols in by_key.items():
            if ctx.kg.graph(domain) is None or not anchors:
                out[:, cols] = self.missing_value
                ctx.flag_all(f"kg_missing:{domain}")
                continue
            if self.variant == "embedding" and ctx.kg.embeddings(domain) is None:
                ctx.flag_all(f"kg_embeddings_missing:{domain}")
            for i, text in enumerate(ctx.texts):
                out[i, cols] = ctx.kg.distance(ctx.kg.concepts(text, domain), domain, anchors, variant=self.variant)
        return out


_SENT = re.compile(r"[.!?;]+(?:\s|$)")
_WORD = re.compile(r"(?u)\b\w+\b")
_CLAUSE = re.compile(r"\b(which|that|because|although|though|if|when|whereas|while|unless|since|who|whom|"
                     r"whose|where|after|before|so that|provided)\b|,", re.I)
_REASON = re.compile(r"\b(then|therefore|thus|hence|so|because|if|calculate|compute|derive|prove|explain|"
                     r"compare|why|how|step|first|second|finally|given|assume|suppose|estimate|determine)\b"
                     r"|\d+(?:\.\d+)?|[=+\-*/^%]", re.I)


def mtld(tokens: Sequence[str], threshold: float = 0.72) -> float:
    """Measure of textual lexical diversity (McCarthy & Jarvis 2010), mean of forward and backward passes."""
    if not tokens:
        return 0.0

    def one_pass(toks: Sequence[str]) -> float:
        factors, types, count = 0.0, set(), 0
        for tok in toks:
            count += 1
            types.add(tok)
            if len(types) / count <= threshold:
                factors += 1.0
                types, count = set(), 0
        if count:
            ttr = len(types) / count
            factors += (1.0 - ttr) / (1.0 - threshold) if ttr < 1.0 else 0.0
        return len(toks) / factors if factors > 0 else float(len(toks))

    return 0.5 * (one_pass(tokens) + one_pass(list(reversed(tokens))))


def text_features(text: str) -> dict[str, float]:
    """Expert-independent complexity features of one text, each in [0, 1].

    ``lexical``: MTLD squashed by ``x / (x + 50)``; ``syntax``: mean sentence length (words / 40) and clauses
    per sentence, averaged; ``reasoning``: ``1 - exp(-markers / 4)`` over reasoning markers (numbers,
    operators, connectives such as *therefore*, *if*, *calculate*).
    """
    words = [w.lower() for w in _WORD.findall(text)]
    n_sent = max(1, len([s for s in _SENT.split(text) if s.strip()]))
    m = mtld(words)
    lexical = m / (m + 50.0)
    sent_len = min(1.0, (len(words) / n_sent) / 40.0)
    clauses = min(1.0, (len(_CLAUSE.findall(text)) / n_sent) / 4.0)
    reasoning = 1.0 - math.exp(-len(_REASON.findall(text)) / 4.0)
    return {"lexical": lexical, "syntax": 0.5 * (sent_len + clauses), "reasoning": reasoning}


class DataComplexity(Component):
    """``C_data(t)``: mean of lexical diversity, syntactic complexity, concept density and reasoning steps.

    Concept density is the largest share of tokens linked to any of the experts' graphs; when no graph
    is available it is left out of the mean and the text is flagged ``concept_density_missing``.
    Text-only, so the column is the same for every expert.
    """

    name = "c_data"
    term = "R"

    def column(self, ctx: ScoringContext) -> np.ndarray:
        if "c_data" in ctx.cache:
            return ctx.cache["c_data"]
        domains = ctx.kg_domains()
        out = np.zeros(len(ctx.texts), dtype=np.float32)
        for i, text in enumerate(ctx.texts):
            f = text_features(text)
            dens = [d for d in (ctx.kg.density(text, dom) for dom in domains) if d is not None]
            parts = [f["lexical"], f["syntax"], f["reasoning"]]
            if dens:
                parts.append(min(1.0, max(dens)))
            else:
                ctx.flags[i].add("concept_density_missing")
            out[i] = float(np.mean(parts))
        ctx.cache["c_data"] = out
        return out

    def compute(self, ctx: ScoringContext) -> np.ndarray:
        col = self.column(ctx)
        return np.broadcast_to(col[:, None], ctx.shape).astype(np.float32)


def size_load(params: np.ndarray, *, lo: float = 1e7, hi: float = 1e12) -> np.ndarray:
    """Relative load of a model size: 1 for ≤ ``lo`` parameters, 0 for ≥ ``hi``, log-linear between."""
    p = np.log10(np.maximum(np.asarray(params, dtype=np.float64), 1.0))
    return np.clip(1.0 - (p - math.log10(lo)) / (math.log10(hi) - math.log10(lo)), 0.0, 1.0).astype(np.float32)


class ModelLoad(Component):
    """``C_model(e, t)``: size load × ``C_data(t)`` (small experts strain on complex text), averaged with the
    expert's historical error on similar tasks when the history has any (``history_weight``), then with
    the live load of the expert's server when it is measured (``ctx.live_load``, ``live_weight``):
    ``C_model = (1 - w_l)·C_static + w_l·load``, flagged ``live_load`` on the texts it touched."""

    name = "c_model"
    term = "R"

    def __init__(self, history_weight: float = 0.5, live_weight: float = 0.5) -> None:
        self.history_weight = history_weight
        self.live_weight = live_weight

    def compute(self, ctx: ScoringContext) -> np.ndarray:
        out = self._static(ctx)
        live = ctx.live_load
        if live is None:
            return out
        live = np.asarray(live, dtype=np.float32).reshape(-1)
        known = ~np.isnan(live)
        if not known.any():
            return out
        w = self.live_weight
        mixed = np.where(known[None, :], (1.0 - w) * out + w * np.nan_to_num(live)[None, :], out)
        ctx.flag_all("live_load")
        return np.clip(mixed, 0.0, 1.0).astype(np.float32)

    def _static(self, ctx: ScoringContext) -> np.ndarray:
        """Size and history alone (the seeds' C_model)."""
        cdata = DataComplexity().column(ctx)  # (T,)
        load = size_load(np.array([e.params for e in ctx.experts]))  # (E,)
        out = cdata[:, None] * load[None, :]  # (T, E)
        if ctx.history is None:
            ctx.flag_all("no_history")
            return out.astype(np.float32)
        hist = np.full(ctx.shape, np.nan, dtype=np.float32)
        batched = getattr(ctx.history, "error_rates", None)
        for j, ex in enumerate(ctx.experts):
            if batched is not None and getattr(ctx.history, "uses_text", False):
                hist[:, j] = batched(ex.name, ctx.embeddings, texts=ctx.texts)
            elif batched is not None:
                hist[:, j] = batched(ex.name, ctx.embeddings)
            else:
                for i in range(len(ctx.texts)):
                    r = ctx.history.error_rate(ex.name, ctx.embeddings[i])
                    hist[i, j] = np.nan if r is None else r
        has = ~np.isnan(hist)
        w = self.history_weight
        out = np.where(has, (1.0 - w) * out + w * np.nan_to_num(hist), out)
        for i in np.flatnonzero(~has.any(axis=1)):
            ctx.flags[i].add("no_history")
        return np.clip(out, 0.0, 1.0).astype(np.float32)


class DomainSparsity(Component):
    """``C_sparsity(t, e)``: ``1 -`` the lexical relevance of t to e's corpus, averaged with the share of
    t's linked concepts (over the fixed graph set of ``KGAccess.domains``) missing from e's graph.

    The lexical relevance is, by default, the *keyness* of t's words for e's corpus against the pooled
    default corpora (:meth:`qsef.profiles.LexicalIndex.keyness`); ``lexical="bm25"`` uses the normalised
    BM25 score instead (:meth:`~qsef.profiles.LexicalIndex.relevance`), which is nearly constant on real
    questions and so carries little signal. An expert with no index counts as relevance 0 (flag
    ``bm25_missing:<expert>``); one whose index has no word counts falls back to BM25 (flag
    ``term_counts_missing:<expert>``). When no concept links in any graph the concept share is left out.

    Args:
        lexical_weight: share of the lexical term (the rest is the missing-concept share). The default
            1.0 leaves the concept share out: WordNet's general graph links nearly every English word, so
            "concepts missing from e's graph" is about 0 for the general expert and about 0.9 for every
            other one whatever the text — a constant pull toward ``general`` (measured in
            ``benchmarks/routing_mmlu.py``, variant ``c_sparsity_concepts``).
        lexical: ``"keyness"`` or ``"bm25"``.
        reference: background word counts for keyness (default: :func:`qsef.profiles.reference_terms`).
    """

    name = "c_sparsity"
    term = "R"

    def __init__(self, lexical_weight: float = 1.0, lexical: str = "keyness", reference: Any = None) -> None:
        if lexical not in ("keyness", "bm25"):
            raise ValueError(f"lexical must be 'keyness' or 'bm25', not {lexical!r}")
        if not 0.0 <= lexical_weight <= 1.0:
            raise ValueError(f"lexical_weight must lie in [0, 1], not {lexical_weight}")
        self.lexical_weight = lexical_weight
        self.lexical = lexical
        self._reference = reference
        self._reference_failed = False

    def reference(self, ctx: ScoringContext) -> Any:
        """The keyness background: the given one, else the pooled default corpora; when those cannot be
        built here (corpora not installed), the pooled corpora of the experts being scored, flagged
        ``keyness_reference:scored_experts``."""
        if self._reference is None and not self._reference_failed and ctx.settings is not None:
            from qsef.profiles import reference_terms

            try:
                self._reference = reference_terms(ctx.settings)
            except Exception as exc:  # corpora, encoder or profiles unavailable: a flagged fallback, not a crash
                log.warning("default corpora unavailable; keyness measured against the scored experts",
                            extra={"error": str(exc)[:200]})
                self._reference_failed = True
        if self._reference is not None:
            return self._reference
        from qsef.profiles import ReferenceTerms

        ctx.flag_all("keyness_reference:scored_experts")
        return ReferenceTerms.pooled([ex.lexical for ex in ctx.experts if ex.lexical is not None])

    def _lexical_relevance(self, ctx: ScoringContext, index: Any, expert: str) -> np.ndarray:
        if self.lexical == "keyness":
            if index.terms is not None:
                if "keyness_reference" not in ctx.cache:
                    ctx.cache["keyness_reference"] = self.reference(ctx)
                return index.keyness(ctx.cache["tokens"], ctx.cache["keyness_reference"])
            ctx.flag_all(f"term_counts_missing:{expert}")
        return index.relevance(ctx.texts, tokens=ctx.cache["tokens"])

    def compute(self, ctx: ScoringContext) -> np.ndarray:
        t, e = ctx.shape
        lex = np.ones((t, e), dtype=np.float32)
        by_index: dict[int, list[int]] = {}
        for j, ex in enumerate(ctx.experts):
            by_index.setdefault(id(ex.lexical), []).append(j)
        none_cols = by_index.pop(id(None), [])
        for j in none_cols:
            ctx.flag_all(f"bm25_missing:{ctx.experts[j].name}")
        if by_index and "tokens" not in ctx.cache:
            from qsef.profiles import tokenize

            ctx.cache["tokens"] = tokenize(ctx.texts)
        for cols in by_index.values():
            ex = ctx.experts[cols[0]]
            lex[:, cols] = (1.0 - self._lexical_relevance(ctx, ex.lexical, ex.name))[:, None]
        if self.lexical_weight >= 1.0:
            return lex

        base = [d for d in ctx.kg_domains() if ctx.kg.graph(d) is not None]
        by_domain: dict[str | None, list[int]] = {}
        for j, ex in enumerate(ctx.experts):
            d = ex.kg_domain or ex.domain
            by_domain.setdefault(d if ctx.kg.graph(d) is not None else None, []).append(j)
        if not base and list(by_domain) == [None]:
            return lex
        missing = np.full((t, e), np.nan, dtype=np.float32)
        for i, text in enumerate(ctx.texts):
            union = frozenset().union(*(ctx.kg.surface_concepts(text, d) for d in base))
            for d, cols in by_domain.items():
                have = ctx.kg.surface_concepts(text, d) if d is not None else frozenset()
                total = union | have
                if total:
                    missing[i, cols] = 1.0 - len(have) / len(total)
        w = self.lexical_weight
        return np.where(np.isnan(missing), lex, w * lex + (1.0 - w) * missing).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Resolver
# ---------------------------------------------------------------------------------------------
#: The QSEF components in SPEC order (``names`` keeps it; the engine reports ablations in that order).
component_resolver: Resolver[Component] = Resolver(
    Component, [EmbeddingDistance, KGDistance, DataComplexity, ModelLoad, DomainSparsity], kind="QSEF component")
#: Field names used in results, in SPEC order.
COMPONENT_FIELDS = {"d_emb": "D_emb", "d_kg": "D_kg", "c_data": "C_data", "c_model": "C_model",
                    "c_sparsity": "C_sparsity"}
