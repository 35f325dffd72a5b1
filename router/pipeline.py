"""The request path: decompose -> score -> select -> dispatch -> aggregate -> record feedback.

:class:`Router` ties the pieces together and returns a :class:`RouteResult` that carries every
reason: the decomposition path (and whether it was a flagged fallback), per sub-task the QSEF
breakdown of every candidate, the selection, the expert attempts, and timings.

Example:
    >>> router = Router.from_settings(Settings())
    >>> result = router.route("What is a tort, and how do I reverse a list in Python?")
    >>> [(s.text, s.expert) for s in result.subtasks]
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from experts.registry import ExpertRegistry
from router.decompose import Decomposer
from router.dispatch import Aggregation, Attempt, Dispatcher, aggregator_resolver
from router.feedback import FeedbackStore
from router.llm import RouterLLM
from router.scoring import RegistryScorer, Strategy

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RouteOptions", "RouteResult", "Router", "SubtaskResult"]


class RouteOptions(BaseModel):
    strategy: Strategy = "argmax"
    k: int = Field(2, ge=1, le=8, description="experts per sub-task for top_k / cost_aware")
    cost_lambda: float = Field(0.1, ge=0, le=100)
    tau: float = Field(0.0, ge=0, le=1, description="low-confidence threshold for argmax (0 = off)")
    answer: bool = Field(True, description="call the experts (false: decomposition and scores only)")
    max_tokens: int = Field(128, ge=1, le=2048)
    timeout_s: float | None = Field(None, gt=0, le=600, description="per-expert timeout (default: server's)")
    use_llm: bool = Field(True, description="allow the router LLM (false: clause splitter / fast path)")
    aggregate: str = Field("concat", pattern="^(concat|compose)$")


class SubtaskResult(BaseModel):
    index: int
    text: str
    domain_hint: str
    expert: str | None = Field(None, description="the expert that answered (after any fallback)")
    selected: list[str] = Field(default_factory=list, description="experts chosen by QSEF")
    weights: list[float] = Field(default_factory=list)
    strategy: str = ""
    low_confidence: bool = False
    reason: str = ""
    answer: str = ""
    fell_back: bool = False
    attempts: list[Attempt] = Field(default_factory=list)
    scores: list[dict[str, Any]] = Field(default_factory=list, description="QSEF breakdown per expert, best first")
    flags: list[str] = Field(default_factory=list, description="QSEF degradations (missing graph, no history…)")
    answers: list[dict[str, Any]] = Field(default_factory=list, description="all answers when top-K > 1")


class RouteResult(BaseModel):
    request_id: str
    query: str
    decomposition_path: str
    decomposition_flagged: bool
    decomposition_reason: str = ""
    subtasks: list[SubtaskResult]
    answer: str = ""
    aggregation: Aggregation | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


class Router:
    """Routes compound queries through QSEF-selected experts.

    Args:
        registry, decomposer, scorer, dispatcher, feedback: the components (see their modules).
        fallback_expert: the expert used under the ``tau`` threshold.
    """

    def __init__(self, *, registry: ExpertRegistry, decomposer: Decomposer, scorer: RegistryScorer,
                 dispatcher: Dispatcher, feedback: FeedbackStore | None = None, fallback_expert: str = "general"):
        self.registry = registry
        self.decomposer = decomposer
        self.scorer = scorer
        self.dispatcher = dispatcher
        self.feedback = feedback
        self.fallback_expert = fallback_expert

    @classmethod
    def from_settings(cls, settings: Settings, *, llm: RouterLLM | None = None, timeout_s: float | None = None,
                      seed_defaults: bool = True, registry_path: str | Path | None = None,
                      feedback_path: str | Path | None = None) -> Router:
        """Build the embedded stack: registry + feedback under ``$QSEF_HOME/router`` (or the given paths), the
        configured router LLM, and one shared model pool for the router LLM and the default experts.

        Args:
            settings: everything: data directory, router LLM, and ``settings.router`` (timeouts, retries,
                decomposition limits, seed history).
            timeout_s: per-expert timeout (default ``settings.router.expert_timeout_s``).
        """
        from core.domains import DOMAIN_DESCRIPTIONS
        from experts.backends import ModelPool
        from router.llm import router_llm_from_settings

        cfg = settings.router
        pool = ModelPool(settings)
        registry = ExpertRegistry(registry_path or settings.path("router") / "experts.sqlite")
        if seed_defaults:
            registry.ensure_default_fleet(settings.expert_model)
        feedback = FeedbackStore(feedback_path or settings.path("router") / "feedback.sqlite")
        llm = llm or router_llm_from_settings(settings, pool=pool, timeout=cfg.llm_timeout_s, retries=cfg.llm_retries)
        domains = sorted({e.domain for e in registry.list(enabled_only=True)}) or ["general"]
        descriptions = {**DOMAIN_DESCRIPTIONS, **{e.domain: e.description for e in registry.list() if e.description}}
        return cls(
            registry=registry,
            decomposer=Decomposer(llm, domains, descriptions=descriptions, max_subtasks=cfg.max_subtasks,
                                  max_tokens=cfg.decompose_max_tokens, fast_path=cfg.fast_path),
            scorer=RegistryScorer(registry, settings=settings, history=feedback, seed_history=cfg.seed_history,
                                  answer_history=cfg.answer_history),
            dispatcher=Dispatcher(pool=pool, timeout_s=timeout_s or cfg.expert_timeout_s,
                                  max_fallbacks=cfg.max_fallbacks),
            feedback=feedback,
            fallback_expert=cfg.fallback_expert,
        )

    def refresh_domains(self) -> None:
        """Re-read the domain labels offered to the router LLM after the registry changed."""
        self.decomposer.domains = sorted({e.domain for e in self.registry.list(enabled_only=True)}) or ["general"]

    def route(self, query: str, options: RouteOptions | None = None, *, request_id: str | None = None,
              history: list[dict[str, str]] | None = None) -> RouteResult:
        """Route one query end to end (blocking; call it from a worker thread in async code)."""
        opt = options or RouteOptions()
        rid = request_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        self.refresh_domains()  # experts may have been added or removed by another process
        dec = self.decomposer.decompose(query, use_llm=opt.use_llm)
        t1 = time.perf_counter()
        texts = [s.text for s in dec.subtasks]
        emb = self.scorer.encode(texts)
        result = self.scorer.score(texts, embeddings=emb)
        t2 = time.perf_counter()
        subs: list[SubtaskResult] = []
        for i, st in enumerate(dec.subtasks):
            sel = self.scorer.select(result, i, strategy=opt.strategy, k=opt.k, lam=opt.cost_lambda, tau=opt.tau,
                                     fallback=self.fallback_expert)
            ranked = result.ranked(i)
            subs.append(SubtaskResult(
                index=i, text=st.text, domain_hint=st.domain_hint, selected=list(sel.experts),
                weights=[round(w, 6) for w in sel.weights], strategy=sel.strategy,
                low_confidence=sel.low_confidence, reason=sel.reason,
                scores=[s.to_dict() for s in ranked], flags=list(result.flags[i]),
                expert=sel.experts[0],
            ))
        if opt.answer:
            for i, sub in enumerate(subs):
                ranked_names = [s["expert"] for s in sub.scores]
                answers = self.dispatcher.dispatch(
                    sub.text, sub.selected, sub.weights, ranked_names, self.scorer.spec,
                    max_tokens=opt.max_tokens, history=history or (), timeout_s=opt.timeout_s,
                )
                ok = [a for a in answers if a.expert is not None]
                best = max(ok, key=lambda a: a.weight) if ok else None
                sub.expert = best.expert if best else None
                sub.answer = best.answer if best else ""
                sub.fell_back = any(a.fell_back for a in answers) or not ok
                sub.attempts = [att for a in answers for att in a.attempts]
                if len(answers) > 1:
                    sub.answers = [a.model_dump(include={"expert", "answer", "weight"}) for a in answers]
                self._record(rid, sub, emb[i])
                self._update_health(sub.attempts)
        t3 = time.perf_counter()
        agg = None
        if opt.answer:
            items = [(s.text, s.expert, s.answer) for s in subs]
            llm = self.decomposer.llm if opt.use_llm else None  # use_llm=false: no router-LLM call at all
            agg = aggregator_resolver[opt.aggregate](items, llm=llm, query=query)
        t4 = time.perf_counter()
        return RouteResult(
            request_id=rid, query=query, decomposition_path=dec.path, decomposition_flagged=dec.flagged,
            decomposition_reason=dec.reason, subtasks=subs, answer=agg.answer if agg else "", aggregation=agg,
            timings_ms={"decompose": _ms(t0, t1), "score": _ms(t1, t2), "dispatch": _ms(t2, t3),
                        "aggregate": _ms(t3, t4), "total": _ms(t0, t4)},
        )

    def _record(self, rid: str, sub: SubtaskResult, embedding: Any) -> None:
        if self.feedback is None:
            return
        te_of = {s["expert"]: s["TE"] for s in sub.scores}
        for att in sub.attempts:
            if att.skipped:  # not called: says nothing about the expert on this task
                continue
            try:
                self.feedback.record(request_id=rid, index=sub.index, subtask=sub.text, expert=att.expert,
                                     te=te_of.get(att.expert), latency_ms=att.latency_ms, ok=att.ok,
                                     error=att.error, embedding=embedding)
            except Exception as exc:  # feedback must never break routing; logged, not silent
                log.error("could not record feedback", extra={"request_id": rid, "error": str(exc)[:200]})

    def _update_health(self, attempts: list[Attempt]) -> None:
        """Mark experts up or down in the registry when a call's outcome changes their state."""
        for att in attempts:
            if att.skipped:
                continue
            status = "ok" if att.ok else "down"
            try:
                if self.scorer.spec(att.expert).health != status:
                    self.registry.set_health(att.expert, status, att.error or "answered")
            except Exception as exc:  # an expert removed meanwhile; health is advisory
                log.info("could not update expert health", extra={"expert": att.expert, "error": str(exc)[:200]})

    def close(self) -> None:
        self.dispatcher.close()


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 3)
