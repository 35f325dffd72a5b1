"""The one place where the router meets QSEF: registry experts -> QSEF profiles -> scores -> selection.

:class:`RegistryScorer` turns the registry's enabled experts into :class:`qsef.profiles.ExpertProfile`
objects (rebuilt only when the registry changes), scores sub-tasks with one batched
:meth:`qsef.engine.QSEFEngine.score` call, and picks experts with a strategy from
:mod:`qsef.selection`.

Profiles: an expert whose ``profile`` names a saved profile folder (``dir``, written by
:meth:`qsef.profiles.ExpertProfile.save`, e.g. by distillation) uses it; one with ``texts`` gets a
centroid and BM25 index built from them;
an expert of a default domain (medicine, law, code, finance, general) shares that domain's corpus
profile; any other expert is profiled from its description.

Example:
    >>> scorer = RegistryScorer(registry, history=feedback_store)
    >>> result = scorer.score(["What is a tort?"])
    >>> scorer.select(result, 0, strategy="argmax").experts
    ['law']
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from experts.registry import ExpertRegistry, ExpertSpec

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "NoExpertsError", "RegistryScorer", "Strategy"]

Strategy = Literal["argmax", "top_k", "cost_aware"]
STRATEGIES: tuple[str, ...] = ("argmax", "top_k", "cost_aware")


class NoExpertsError(RuntimeError):
    """No enabled expert is registered."""


def _fingerprint(specs: Sequence[ExpertSpec]) -> str:
    return json.dumps(
        [[s.name, s.domain, s.size_params, s.cost, s.description, s.profile] for s in specs], sort_keys=True
    )


class RegistryScorer:
    """Scores sub-tasks against the registry's enabled experts.

    Args:
        registry: the expert registry.
        engine: a :class:`qsef.engine.QSEFEngine` (default: built lazily with ``history``).
        history: the feedback store (QSEF's history provider for ``C_model``).
        encoder: sentence encoder (default: the process encoder).
        seed_history: chain :func:`qsef.history.seed_history` (labelled MMLU questions) after the
            feedback store, so texts the feedback knows nothing about are still scored with history —
            without it, out-of-the-box routing leans on corpus centroids alone and favours "general".
    """

    def __init__(self, registry: ExpertRegistry, *, settings: Settings, engine: Any = None, history: Any = None,
                 encoder: Any = None, seed_history: bool = False, answer_history: bool = False):
        self.registry = registry
        self.settings = settings
        self._engine = engine
        self.history = history
        self.seed_history = seed_history
        self.answer_history = self._load_answer_history() if answer_history else None
        self._seed: Any = None
        self._encoder = encoder
        self._lock = threading.Lock()
        self._profiles: list[Any] = []
        self._specs: dict[str, ExpertSpec] = {}
        self._fp: str | None = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from qsef.engine import QSEFEngine

            history = self.history
            if self.answer_history is not None:
                from qsef.history import ChainedHistory

                history = ChainedHistory(self.history, self.answer_history)
            self._engine = QSEFEngine(experts=[], encoder=self._encoder, history=history,
                                      settings=self.settings)
        return self._engine

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings ``(T, dim)`` from the engine's encoder."""
        return self.engine.encode(list(texts))

    def warm(self) -> None:
        """Load the encoder, profiles and graphs now with one throw-away score (the server does this at
        start-up, so the first request does not pay for it)."""
        self.score(["What is the warm-up question?"])

    def profiles(self) -> list[Any]:
        """QSEF profiles of the enabled experts, rebuilt when the registry changed.

        Raises:
            NoExpertsError: when no expert is enabled.
        """
        specs = self.registry.list(enabled_only=True)
        if not specs:
            raise NoExpertsError("no enabled experts are registered; add one with `qsef experts add`")
        fp = _fingerprint(specs)
        with self._lock:
            if fp != self._fp:
                self._profiles = [self._profile_for(s) for s in specs]
                self._specs = {s.name: s for s in specs}
                self._fp = fp
                if self.seed_history:
                    self._attach_seed(self._profiles)
            else:  # health or prompt changes do not touch profiles, but keep specs fresh
                self._specs = {s.name: s for s in specs}
            return self._profiles

    def _attach_seed(self, profiles: list[Any]) -> None:
        """Chain the seed history after the feedback store; its expert -> domain map follows the registry."""
        from qsef.history import ChainedHistory, seed_history

        if self._seed is None:
            self._seed = seed_history(profiles, settings=self.settings, encoder=self.engine.encoder)
            self.engine.history = ChainedHistory(self.history, self.answer_history, self._seed)
        self._seed.expert_domains = {p.name: p.domain for p in profiles}

    def _load_answer_history(self) -> Any:
        """The fleet's measured answer matrix as ``C_model`` history, when the benchmark has written one:
        feedback first, then measured answers (for the experts it covers), then the labelled seed."""
        from qsef.history import AnswerHistory, answer_history_path

        path = answer_history_path(self.settings)
        if not path.is_file():
            return None
        try:
            return AnswerHistory.load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("answer history unreadable; not used", extra={"path": str(path), "error": str(exc)[:200]})
            return None

    def spec(self, name: str) -> ExpertSpec:
        return self._specs.get(name) or self.registry.get(name)

    def _profile_for(self, spec: ExpertSpec) -> Any:
        from pathlib import Path

        from core.domains import DOMAINS
        from qsef.profiles import ExpertProfile, build_domain_profile, default_profiles

        params = float(spec.size_params) if spec.size_params else None
        texts = spec.profile.get("texts") if isinstance(spec.profile, dict) else None
        folder = spec.profile.get("dir") if isinstance(spec.profile, dict) else None
        extra: dict[str, Any] = {"cost": spec.cost, **({"params": params} if params else {})}
        if folder and (Path(folder) / "profile.json").is_file():
            try:
                prof = ExpertProfile.load(Path(folder))
                return prof.with_centroid(prof.centroid, name=spec.name, **extra)
            except (OSError, ValueError) as exc:  # fall through to a rebuilt profile, logged
                log.warning("cannot load expert profile; rebuilding it", extra={"expert": spec.name,
                                                                                  "error": str(exc)[:200]})
        if texts:
            return build_domain_profile(spec.domain, settings=self.settings, encoder=self.engine.encoder,
                                        passages=list(texts), name=spec.name, **extra)
        if spec.domain in DOMAINS:
            base = default_profiles(self.settings, domains=[spec.domain], encoder=self.engine.encoder)[0]
            return base.with_centroid(base.centroid, name=spec.name, **extra)
        log.warning("expert has no profile texts; profiling it from its description", extra={"expert": spec.name})
        return build_domain_profile(spec.domain, settings=self.settings, encoder=self.engine.encoder,
                                    passages=[spec.description or spec.domain], name=spec.name, **extra)

    def score(self, texts: Sequence[str], *, embeddings: np.ndarray | None = None) -> Any:
        """One batched QSEF pass: a :class:`qsef.engine.ScoreResult` with ``(T, E)`` matrices."""
        profiles = self.profiles()
        return self.engine.score(list(texts), profiles, embeddings=embeddings)

    def select(self, result: Any, i: int, *, strategy: Strategy = "argmax", k: int = 2, lam: float = 0.1,
               tau: float = 0.0, fallback: str = "general") -> Any:
        """Pick experts for text ``i`` (a :class:`qsef.selection.Selection`).

        ``tau > 0`` applies the low-confidence threshold to ``argmax`` (fallback expert, flagged). τ compares
        the calibrated share ``P = TE / ΣTE`` of the best expert, not raw TE, whose scale moves with the text
        and the fitted weights (:mod:`qsef.selection`); the selection still reports the experts' TE.
        """
        from qsef import selection as sel

        te, names = result.TE[i], result.names
        if strategy == "top_k":
            return sel.select_top_k(te, names, k=k)
        if strategy == "cost_aware":
            costs = [self.spec(n).cost for n in names]
            return sel.select_cost_aware(te, names, costs, lam=lam, max_experts=k)
        if strategy != "argmax":
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
        if tau > 0 and fallback in names:
            p = np.asarray(result.probabilities()[i], dtype=np.float64)
            out = sel.select_with_threshold(p, names, tau=tau, fallback=fallback)
            out.reason = out.reason.replace("best TE", "best P")
            out.te = [float(te[list(names).index(x)]) for x in out.experts]
            return out
        return sel.select_argmax(te, names)
