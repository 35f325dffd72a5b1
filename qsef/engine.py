"""QSEFEngine: score T sub-tasks against E experts in one batched pass.

All components produce ``(T, E)`` matrices, so scoring a sub-task against 1,000 experts costs one
encoder forward plus a few numpy operations. The weights live in :class:`QSEFWeights`; the defaults
ship pre-fitted in ``qsef/data/calibration.json`` (see :mod:`qsef.calibration`).

Example:
    >>> from qsef.engine import QSEFEngine
    >>> engine = QSEFEngine()                          # default profiles, encoder, calibration
    >>> result = engine.score(["What is the first-line treatment for hypertension?"])
    >>> result.ranked(0)[0].expert, round(result.ranked(0)[0].TE, 3)   # a typed qsef.scores.ExpertScore
    ('medicine', 0.41)
    >>> result.scores(0).model_dump_json()             # one text's candidates, as the CLI and API print them
    >>> engine.score(texts, ablate=["d_kg"])          # any component switched off
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from qsef.components import (
    COMPONENT_FIELDS,
    Component,
    KGAccess,
    ScoringContext,
    component_resolver,
)
from qsef.history import HistoryProvider
from qsef.profiles import ExpertProfile
from qsef.scores import ExpertScore, TextScores
from qsef.selection import choice_probabilities

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = Path(__file__).parent / "data" / "calibration.json"


def active_calibration_path(settings: Settings) -> Path:
    """The calibration the engine loads by default: ``$QSEF_HOME/calibration.json`` if ``qsef calibrate``
    (or feedback refitting) wrote one, else the shipped ``qsef/data/calibration.json``."""
    user = settings.home / "calibration.json"
    return user if user.is_file() else DEFAULT_CALIBRATION


@dataclass
class QSEFWeights:
    """Weights of SPEC §2. ``w1 + w2 = 1`` and ``w_d + w_m + w_s = 1``; ``k1``, ``k2`` set the scale."""

    w1: float = 0.5   # D_emb in D
    w2: float = 0.5   # D_kg in D
    w_d: float = 0.2  # C_data in R
    w_m: float = 0.3  # C_model in R
    w_s: float = 0.5  # C_sparsity in R
    k1: float = 4.0   # D in log TE
    k2: float = 2.0   # R in log TE

    def coefficients(self) -> dict[str, float]:
        """The weight of each component in ``-log TE`` (what calibration fits)."""
        return {"d_emb": self.k1 * self.w1, "d_kg": self.k1 * self.w2, "c_data": self.k2 * self.w_d,
                "c_model": self.k2 * self.w_m, "c_sparsity": self.k2 * self.w_s}

    @classmethod
    def from_coefficients(cls, beta: dict[str, float], *, w_d: float = 0.2) -> QSEFWeights:
        """Split fitted ``-log TE`` coefficients back into (k, w).

        ``C_data`` is the same for every expert, so choice data cannot identify its weight: ``w_d`` is
        kept at the given prior and ``k2`` is scaled so that ``w_m + w_s = 1 - w_d``.
        """
        be, bk = max(beta.get("d_emb", 0.0), 0.0), max(beta.get("d_kg", 0.0), 0.0)
        bm, bs = max(beta.get("c_model", 0.0), 0.0), max(beta.get("c_sparsity", 0.0), 0.0)
        k1 = be + bk
        k2 = (bm + bs) / (1.0 - w_d) if bm + bs > 0 else 0.0
        return cls(w1=be / k1 if k1 else 0.5, w2=bk / k1 if k1 else 0.5, w_d=w_d,
                   w_m=bm / k2 if k2 else (1 - w_d) / 2, w_s=bs / k2 if k2 else (1 - w_d) / 2, k1=k1, k2=k2)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_CALIBRATION, *, history: bool = True) -> QSEFWeights:
        """Weights from a calibration file (``{"version", "weights": {...}, ...}``).

        A file may also hold ``weights_no_history``, fitted for engines without feedback history
        (then ``C_model`` carries no expert-specific signal and the other weights must do the work);
        ``history=False`` selects it when present.
        """
        data = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        key = "weights" if history or "weights_no_history" not in data else "weights_no_history"
        return cls(**{k: float(v) for k, v in data[key].items() if k in names})


@dataclass
class ScoreResult:
    """Batched scores. Every matrix is ``(T, E)``; rank 1 = highest TE.

    Attributes:
        texts: the T texts; experts: the E profiles (column order).
        components: ``{"d_emb": (T, E), ...}``, absent components are switched off.
        D, R, TE, rank: combined matrices.
        flags: per text, degradations (missing graph, no history, ...).
        weights: the weights used.
    """

    texts: list[str]
    experts: list[ExpertProfile]
    components: dict[str, np.ndarray]
    D: np.ndarray
    R: np.ndarray
    TE: np.ndarray
    rank: np.ndarray
    flags: list[list[str]]
    weights: QSEFWeights
    ablated: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]

    def probabilities(self) -> np.ndarray:
        """``P = TE / Σ_e TE`` per text ``(T, E)``: the conditional-logit choice probability of each expert.

        TE's absolute scale follows the fitted weights; this share is the scale-free confidence to put
        a threshold on (e.g. fallback when the best expert's share is under 0.5).
        """
        return choice_probabilities(self.TE)

    def best(self) -> np.ndarray:
        """Column index of the highest-TE expert per text ``(T,)``."""
        return np.argmax(self.TE, axis=1)

    def _expert_scores(self, i: int, columns: Sequence[int]) -> list[ExpertScore]:
        """The typed rows of text ``i`` for the given expert columns (one ``tolist()`` per matrix row)."""
        comps = {fld: self.components[c][i].tolist() if c in self.components else None
                 for c, fld in COMPONENT_FIELDS.items()}
        d, r, te, rank = (m[i].tolist() for m in (self.D, self.R, self.TE, self.rank))
        p = choice_probabilities(self.TE[i]).tolist()
        return [ExpertScore(expert=self.experts[j].name, domain=self.experts[j].domain, D=d[j], R=r[j], TE=te[j],
                            P=p[j], rank=rank[j], **{f: (v[j] if v is not None else None) for f, v in comps.items()})
                for j in columns]

    def breakdown(self, i: int) -> list[ExpertScore]:
        """Per-expert breakdown for text ``i`` in column order."""
        return self._expert_scores(i, range(len(self.experts)))

    def ranked(self, i: int) -> list[ExpertScore]:
        """Per-expert breakdown for text ``i``, best first."""
        return self._expert_scores(i, np.argsort(self.rank[i], kind="stable").tolist())

    def scores(self, i: int = 0) -> TextScores:
        """Text ``i`` with its flags, the ablated components, the weights and every candidate, best first."""
        return TextScores(text=self.texts[i], experts=self.ranked(i), flags=list(self.flags[i]),
                          ablated=list(self.ablated), weights=asdict(self.weights))


def default_components(settings: Settings) -> list[Component]:
    """One instance of every registered component, ``D_kg`` in the variant ``settings.kg_distance`` names."""
    variant = settings.kg_distance
    return [component_resolver.make(n, variant=variant) if n == "d_kg" else component_resolver.make(n)
            for n in component_resolver.names]


def _rank(te: np.ndarray) -> np.ndarray:
    """Dense 1-based ranks per row, ties broken by column order (stable)."""
    order = np.argsort(-te, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(te.shape[0])[:, None]
    rank[rows, order] = np.arange(1, te.shape[1] + 1)[None, :]
    return rank


class QSEFEngine:
    """Scores sub-tasks against experts (SPEC §2).

    Args:
        experts: candidate profiles (default: :func:`qsef.profiles.default_profiles`, loaded lazily).
        encoder: object with ``encode(list[str]) -> (N, dim)`` unit rows (default: the process encoder).
        weights: :class:`QSEFWeights`, or a path to a calibration file (default:
            :func:`active_calibration_path`).
        components: component names/classes/instances to use (default: all five, see
            :func:`default_components`).
        ablate: component names switched off (contribute 0; reported as ``None``).
        history: feedback history for ``C_model`` (see :class:`qsef.history.HistoryProvider`).
        kg: graph access (default: lazy ``kg.load_graph``).
        prefilter_k: with more than ``prefilter_min`` experts, only the union of each text's
            ``prefilter_k`` nearest centroids (exact faiss inner-product search) is scored; the result
            then lists those candidates only and every text carries the flag ``prefiltered:<n>/<N>``.
        settings: where profiles, calibration, graphs and the encoder come from (default: ``Settings()``,
            read from the environment — the faces pass theirs).
    """

    def __init__(self, experts: Sequence[ExpertProfile] | None = None, *, encoder: Any = None,
                 weights: QSEFWeights | str | Path | None = None,
                 components: Iterable[str | type[Component] | Component] | None = None,
                 ablate: Iterable[str] = (), history: HistoryProvider | None = None,
                 kg: KGAccess | None = None, prefilter_k: int = 32, prefilter_min: int = 64,
                 settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.prefilter_k = prefilter_k
        self.prefilter_min = prefilter_min
        self._filter: tuple[tuple[int, ...], Any, list[ExpertProfile]] | None = None
        self._experts = list(experts) if experts is not None else None
        self._encoder = encoder
        self._calibration: Path | None = None
        self._loaded: dict[bool, QSEFWeights] = {}
        if weights is None:
            path = active_calibration_path(self.settings)
            self._calibration = path if path.is_file() else None
            weights = QSEFWeights.load(path) if path.is_file() else QSEFWeights()
        elif not isinstance(weights, QSEFWeights):
            self._calibration = Path(weights)
            weights = QSEFWeights.load(weights)
        self._weights = weights
        comps = components if components is not None else default_components(self.settings)
        self.components = [component_resolver.make(c) for c in comps]
        self.ablate = {component_resolver.lookup(a).name for a in ablate}
        self.history = history
        self.kg = kg or KGAccess(self.settings)

    @property
    def weights(self) -> QSEFWeights:
        """The weights in use: from a calibration file, the set fitted for the engine's history state
        (with or without a history provider); otherwise the weights given."""
        return self.weights_for(history=self.history is not None)

    def weights_for(self, *, history: bool) -> QSEFWeights:
        """The weights the engine uses with (``history=True``) or without a history provider — e.g. the
        weights an engine about to be given a history will score with."""
        if self._calibration is not None:
            if history not in self._loaded:
                self._loaded[history] = QSEFWeights.load(self._calibration, history=history)
            return self._loaded[history]
        return self._weights

    @weights.setter
    def weights(self, value: QSEFWeights) -> None:
        self._weights = value
        self._calibration = None

    @property
    def experts(self) -> list[ExpertProfile]:
        if self._experts is None:
            from qsef.profiles import default_profiles

            self._experts = default_profiles(self.settings)
        return self._experts

    @experts.setter
    def experts(self, value: Sequence[ExpertProfile]) -> None:
        self._experts = list(value)

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from qsef.encoder import get_encoder

            self._encoder = get_encoder(self.settings)
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts))

    def score(self, texts: str | Sequence[str], experts: Sequence[ExpertProfile] | None = None, *,
              embeddings: np.ndarray | None = None, ablate: Iterable[str] = (),
              weights: QSEFWeights | None = None, live_load: Mapping[str, float] | None = None) -> ScoreResult:
        """Score every text against every expert at once.

        Args:
            texts: one text or T texts.
            experts: E candidate profiles (default: the engine's).
            embeddings: precomputed ``(T, dim)`` unit vectors (skips the encoder).
            ablate: extra components switched off for this call.
            weights: override the engine's weights for this call.
            live_load: ``{expert name: load in [0, 1]}`` of the experts whose servers were measured
                (``C_model`` mixes it in); experts left out have none.

        Returns:
            :class:`ScoreResult` with ``(T, E)`` matrices.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        experts = list(experts) if experts is not None else self.experts
        if not experts:
            raise ValueError("no candidate experts to score against")
        emb = self.encode(texts) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        n_all = len(experts)
        if n_all > self.prefilter_min:
            experts = [experts[j] for j in self.candidates(emb, experts)]
        live = None
        if live_load:
            live = np.array([live_load.get(e.name, np.nan) for e in experts], dtype=np.float32)
        ctx = ScoringContext(texts=texts, embeddings=emb, experts=experts, kg=self.kg, history=self.history,
                             settings=self.settings, live_load=live)
        if len(experts) < n_all:
            ctx.flag_all(f"prefiltered:{len(experts)}/{n_all}")
        values = self.component_values(ctx, ablate=ablate)
        if weights is not None or self._calibration is None or self.history is None:
            return self.combine(ctx, values, weights=weights or self.weights)
        # a history provider is plugged in, but texts it knows nothing about ("no_history") are scored
        # with the weights fitted for the no-history feature set, which lean on D_emb instead of C_model
        no_hist = np.array(["no_history" in f for f in ctx.flags])
        res = self.combine(ctx, values, weights=self.weights)
        if no_hist.any():
            alt = self.combine(ctx, values, weights=QSEFWeights.load(self._calibration, history=False))
            if no_hist.all():
                return alt
            for name in ("D", "R", "TE", "rank"):
                getattr(res, name)[no_hist] = getattr(alt, name)[no_hist]
        return res

    def candidates(self, embeddings: np.ndarray, experts: Sequence[ExpertProfile]) -> np.ndarray:
        """Indices of the experts whose centroids are among each text's ``prefilter_k`` nearest (faiss)."""
        from qsef.selection import CandidateFilter

        key = tuple(id(e) for e in experts)
        if self._filter is None or self._filter[0] != key:
            self._filter = (key, CandidateFilter(np.stack([e.centroid for e in experts]), min_experts=self.prefilter_min),
                            list(experts))
        return self._filter[1].candidates(embeddings, self.prefilter_k)

    def component_values(self, ctx: ScoringContext, *, ablate: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Raw component matrices ``{name: (T, E)}`` for the enabled components."""
        off = self.ablate | {component_resolver.lookup(a).name for a in ablate}
        return {c.name: np.asarray(c.compute(ctx), dtype=np.float32) for c in self.components if c.name not in off}

    def combine(self, ctx: ScoringContext, values: dict[str, np.ndarray], *,
                weights: QSEFWeights | None = None) -> ScoreResult:
        """Combine component matrices into D, R, TE and ranks."""
        w = weights or self.weights
        t, e = ctx.shape
        zero = np.zeros((t, e), dtype=np.float32)
        D = w.w1 * values.get("d_emb", zero) + w.w2 * values.get("d_kg", zero)
        R = w.w_d * values.get("c_data", zero) + w.w_m * values.get("c_model", zero) + w.w_s * values.get("c_sparsity", zero)
        TE = np.exp(-(w.k1 * D + w.k2 * R)).astype(np.float32)
        ablated = [c for c in component_resolver.names if c not in values]
        return ScoreResult(texts=ctx.texts, experts=ctx.experts, components=values, D=D.astype(np.float32),
                           R=R.astype(np.float32), TE=TE, rank=_rank(TE),
                           flags=[sorted(f) for f in ctx.flags], weights=w, ablated=ablated)
