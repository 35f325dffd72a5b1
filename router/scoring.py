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

Isolation: one expert whose profile cannot be built or scored (a damaged profile folder, a centroid
from another encoder, anything that raises) is left out of scoring instead of failing every request:
:attr:`RegistryScorer.unavailable` names it with the reason, every score carries the flag
``expert_unavailable:<name>``, and ``GET /health`` reports the fleet as degraded.

Live load: with ``live_load`` (an :class:`experts.load.LiveLoad`), every scoring pass reads the load
of the experts served by vLLM (cached for a couple of seconds) and hands it to ``C_model``; an expert
whose server has ``waiting_threshold`` requests queued is *saturated*: :meth:`RegistryScorer.select`
sheds it — the next-best unsaturated expert by TE takes its place — and flags the sub-task
``shed_load:<name>`` (the saturated expert stays in the ranking, so it is still a fallback).

Example:
    >>> scorer = RegistryScorer(registry, history=feedback_store)
    >>> result = scorer.score(["What is a tort?"])
    >>> scorer.select(result, 0, strategy="argmax").experts
    ['law']
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from experts.registry import ExpertRegistry, ExpertSpec
from qsef.selection import Selection, selection_strategy_resolver

if TYPE_CHECKING:  # annotations only: the engine is imported when it is first built (see .engine)
    from core.settings import Settings
    from experts.load import LiveLoad
    from qsef.encoder import Encoder
    from qsef.engine import QSEFEngine, ScoreResult
    from qsef.history import AnswerHistory, HistoryProvider, LabelledHistory
    from qsef.profiles import ExpertProfile

log = logging.getLogger(__name__)

__all__ = ["NoExpertsError", "RegistryScorer"]


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
        live_load: reads the vLLM servers' load for ``C_model`` and saturation (``None``: size and history only).
    """

    def __init__(self, registry: ExpertRegistry, *, settings: Settings, engine: QSEFEngine | None = None,
                 history: HistoryProvider | None = None, encoder: Encoder | None = None, seed_history: bool = False,
                 answer_history: bool = False, live_load: LiveLoad | None = None):
        self.registry = registry
        self.live_load = live_load
        self.settings = settings
        self._engine = engine
        self.history = history
        self.seed_history = seed_history
        self.answer_history = self._load_answer_history() if answer_history else None
        self._seed: LabelledHistory | None = None
        self._encoder = encoder
        self._lock = threading.Lock()
        self._profiles: list[ExpertProfile] = []
        self._specs: dict[str, ExpertSpec] = {}
        self._fp: str | None = None
        self.unavailable: dict[str, str] = {}  # expert -> why it is left out of scoring

    @property
    def engine(self) -> QSEFEngine:
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

    def profiles(self) -> list[ExpertProfile]:
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
                profiles, unavailable = [], {}
                for s in specs:
                    try:
                        profiles.append(self._checked_profile(s))
                    except Exception as exc:  # one bad expert must not take scoring down: skipped, flagged
                        unavailable[s.name] = f"profile cannot be built: {type(exc).__name__}: {exc}"[:500]
                        log.error("expert left out of scoring", extra={"expert": s.name,
                                                                       "error": unavailable[s.name][:300]})
                if not profiles:
                    raise NoExpertsError("no enabled expert can be scored: " +
                                         "; ".join(f"{n}: {why}" for n, why in unavailable.items()))
                self._profiles = profiles
                self.unavailable = unavailable
                self._specs = {s.name: s for s in specs}
                self._fp = fp
                if self.seed_history:
                    self._attach_seed(self._profiles)
            else:  # health or prompt changes do not touch profiles, but keep specs fresh
                self._specs = {s.name: s for s in specs}
            return self._profiles

    def _attach_seed(self, profiles: list[ExpertProfile]) -> None:
        """Chain the seed history after the feedback store; its expert -> domain map follows the registry."""
        from qsef.history import ChainedHistory, seed_history

        if self._seed is None:
            self._seed = seed_history(profiles, settings=self.settings, encoder=self.engine.encoder)
            self.engine.history = ChainedHistory(self.history, self.answer_history, self._seed)
        self._seed.expert_domains = {p.name: p.domain for p in profiles}

    def _load_answer_history(self) -> AnswerHistory | None:
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

    def _checked_profile(self, spec: ExpertSpec) -> ExpertProfile:
        """:meth:`_profile_for`, refusing a centroid the encoder cannot be compared with."""
        prof = self._profile_for(spec)
        dim = getattr(self.engine.encoder, "dim", None)
        width = int(np.asarray(prof.centroid).shape[0])
        if isinstance(dim, int) and width != dim:
            raise ValueError(f"profile centroid has {width} dimensions but the encoder "
                             f"{getattr(self.engine.encoder, 'name', '?')!r} gives {dim}; rebuild the profile")
        return prof

    def _profile_for(self, spec: ExpertSpec) -> ExpertProfile:
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
            except (OSError, ValueError, KeyError, TypeError) as exc:  # fall through to a rebuilt profile, logged
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

    def score(self, texts: Sequence[str], *, embeddings: np.ndarray | None = None) -> ScoreResult:
        """One batched QSEF pass: a :class:`qsef.engine.ScoreResult` with ``(T, E)`` matrices.

        When the pass fails, each expert is scored alone to find the one(s) that fail; they are left
        out (see the module doc) and the others are scored again.
        """
        profiles = self.profiles()
        texts = list(texts)
        samples = self._live_samples(profiles)
        try:
            result = self.engine.score(texts, profiles, embeddings=embeddings,
                                       live_load={n: s.load for n, s in samples.items()} or None)
        except NoExpertsError:
            raise
        except Exception as exc:
            log.error("batched scoring failed; scoring experts one by one", extra={"error": str(exc)[:300]})
            good = []
            for p in profiles:
                try:
                    self.engine.score(texts[:1], [p], embeddings=None if embeddings is None else embeddings[:1])
                    good.append(p)
                except Exception as one:
                    with self._lock:
                        self.unavailable[p.name] = f"scoring fails: {type(one).__name__}: {one}"[:500]
                    log.error("expert left out of scoring", extra={"expert": p.name, "error": str(one)[:300]})
            if not good or len(good) == len(profiles):
                raise
            with self._lock:
                if self._profiles is profiles:
                    self._profiles = good
            result = self.engine.score(texts, good, embeddings=embeddings)
        for name in sorted(self.unavailable):
            for f in result.flags:
                f.append(f"expert_unavailable:{name}")
        for name in sorted(n for n, s in samples.items() if s.saturated):
            for f in result.flags:
                f.append(f"saturated:{name}")
        return result

    def _live_samples(self, profiles: Sequence[ExpertProfile]) -> dict:
        """``{name: LoadSample}`` of the profiled experts on vLLM servers (empty without ``live_load``)."""
        if self.live_load is None:
            return {}
        specs = [self._specs[p.name] for p in profiles if p.name in self._specs]
        try:
            return self.live_load.for_experts(specs)
        except Exception as exc:  # live load is an extra signal: never a reason to fail scoring
            log.warning("live load unavailable", extra={"error": str(exc)[:200]})
            return {}

    def select(self, result: ScoreResult, i: int, *, strategy: str = "argmax", k: int = 2, lam: float = 0.1,
               tau: float = 0.0, fallback: str = "general") -> Selection:
        """Pick experts for text ``i`` with a strategy of :data:`qsef.selection.selection_strategy_resolver`.

        ``tau > 0`` applies the low-confidence threshold to ``argmax`` (the ``threshold`` strategy: the
        fallback expert, flagged, when the best expert's calibrated share P is under ``tau``).

        Raises:
            UnknownComponentError: an unknown strategy name (a ``ValueError``), listing the valid ones.
        """
        name = selection_strategy_resolver.canonical_name(strategy)
        if name == "argmax" and tau > 0 and fallback in result.names:
            name = "threshold"
        kwargs = {"top_k": {"k": k}, "cost_aware": {"lam": lam, "max_experts": k},
                  "threshold": {"tau": tau, "fallback": fallback}}.get(name, {})
        costs = [self.spec(n).cost for n in result.names] if name == "cost_aware" else None
        sel = selection_strategy_resolver.make(name, kwargs).select(result.TE[i], result.names, costs=costs)
        return _shed_saturated(sel, result, i)


def _shed_saturated(sel: Selection, result: ScoreResult, i: int) -> Selection:
    """``sel`` with each saturated expert replaced by the next-best unsaturated one by TE (weights kept);
    the replaced names are flagged ``shed_load:<name>`` on text ``i``. Unchanged when nothing else is free."""
    saturated = {f.split(":", 1)[1] for f in result.flags[i] if f.startswith("saturated:")}
    if not saturated or not saturated & set(sel.experts):
        return sel
    order = [result.names[j] for j in np.argsort(-np.asarray(result.TE[i], dtype=np.float64), kind="stable")]
    spare = [n for n in order if n not in saturated and n not in sel.experts]
    experts, shed = [], []
    for n in sel.experts:
        if n in saturated and spare:
            experts.append(spare.pop(0))
            shed.append(n)
        else:
            experts.append(n)
    if not shed:
        return sel
    result.flags[i].extend(f"shed_load:{n}" for n in shed)
    why = f"shed load: {', '.join(shed)} saturated (requests waiting); next-best {', '.join(experts)}"
    return dataclasses.replace(sel, experts=experts, reason=f"{sel.reason}; {why}" if sel.reason else why)
