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

import concurrent.futures as cf
import logging
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experts.registry import ExpertRegistry, registry_from_settings
from qsef.scores import ExpertScore
from qsef.selection import selection_strategy_resolver
from router.decompose import Decomposer
from router.dispatch import (
    Aggregation,
    Attempt,
    Dispatcher,
    ExpertAnswer,
    aggregate_concat,
    answer_aggregator_resolver,
)
from router.feedback import FeedbackStore, feedback_from_settings
from router.llm import RouterLLM
from router.scoring import RegistryScorer

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RouteCancelledError", "RouteOptions", "RouteResult", "Router", "StreamDelta", "SubtaskResult"]


class RouteCancelledError(RuntimeError):
    """The caller cancelled the route (client gone, request budget spent); no result is returned."""


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed answer: ``text`` belongs to sub-task ``index``."""

    index: int
    text: str


class RouteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, as in the other bodies

    strategy: str = Field("argmax", description="a qsef.selection strategy",
                          json_schema_extra={"enum": selection_strategy_resolver.options})
    k: int = Field(2, ge=1, le=8, description="experts per sub-task for top_k / cost_aware")
    cost_lambda: float = Field(0.1, ge=0, le=100)
    tau: float = Field(0.0, ge=0, le=1, description="low-confidence threshold on the best expert's P = TE / ΣTE "
                                                      "(argmax, threshold; 0 = off)")
    answer: bool = Field(True, description="call the experts (false: decomposition and scores only)")
    max_tokens: int = Field(128, ge=1, le=2048)
    timeout_s: float | None = Field(None, gt=0, le=600, description="per-expert timeout (default: server's)")
    use_llm: bool = Field(True, description="allow the router LLM (false: clause splitter / fast path)")
    aggregate: str = Field("concat", description="how the sub-task answers are combined",
                           json_schema_extra={"enum": answer_aggregator_resolver.options})

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        return selection_strategy_resolver.canonical_name(v)  # the error lists the strategies

    @field_validator("aggregate")
    @classmethod
    def _known_aggregator(cls, v: str) -> str:
        return answer_aggregator_resolver.canonical_name(v)


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
    scores: list[ExpertScore] = Field(default_factory=list, description="QSEF breakdown per expert, best first")
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
        self._registry_version: int | None = None  # the registry change counter the domains were read at

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
        registry = registry_from_settings(settings, registry_path)
        if seed_defaults:
            registry.ensure_default_fleet(settings.expert_model)
        feedback = feedback_from_settings(settings, feedback_path)
        llm = llm or router_llm_from_settings(settings, pool=pool, timeout=cfg.llm_timeout_s, retries=cfg.llm_retries)
        on_server = cfg.experts_on_server == "always" or (
            cfg.experts_on_server == "auto" and settings.local_precision != "int8")
        factory = _served_experts(llm, pool, cfg.expert_timeout_s) if on_server else None
        domains = sorted({e.domain for e in registry.list(enabled_only=True)}) or ["general"]
        descriptions = {**DOMAIN_DESCRIPTIONS, **{e.domain: e.description for e in registry.list() if e.description}}
        return cls(
            registry=registry,
            decomposer=Decomposer(llm, domains, descriptions=descriptions, max_subtasks=cfg.max_subtasks,
                                  max_tokens=cfg.decompose_max_tokens, fast_path=cfg.fast_path,
                                  clear_split=cfg.clear_split, labels=cfg.decompose_labels),
            scorer=RegistryScorer(registry, settings=settings, history=feedback, seed_history=cfg.seed_history,
                                  answer_history=cfg.answer_history, live_load=_live_load(cfg)),
            dispatcher=Dispatcher(factory, pool=pool, timeout_s=timeout_s or cfg.expert_timeout_s,
                                  max_fallbacks=cfg.max_fallbacks),
            feedback=feedback,
            fallback_expert=cfg.fallback_expert,
        )

    def refresh_domains(self) -> None:
        """Re-read the domain labels offered to the router LLM after the registry changed."""
        self._registry_version = self.registry.version()
        self.decomposer.domains = sorted({e.domain for e in self.registry.list(enabled_only=True)}) or ["general"]

    def sync(self) -> bool:
        """Catch up with registry changes made by other processes (other router workers, the CLI):
        when the registry's change counter moved, the domain labels are re-read. Scoring needs no
        sync (it reads the registry at every request). Returns whether anything changed."""
        if self.registry.version() == self._registry_version:
            return False
        self.refresh_domains()
        return True

    def route(self, query: str, options: RouteOptions | None = None, *, request_id: str | None = None,
              history: list[dict[str, str]] | None = None, cancel: threading.Event | None = None) -> RouteResult:
        """Route one query end to end (blocking; call it from a worker thread in async code).

        Args:
            cancel: set from another thread to abandon the request: a running expert generation stops
                within a decoding step and no further expert is called.

        Raises:
            RouteCancelledError: ``cancel`` was set before the route finished.
        """
        opt = options or RouteOptions()
        rid = request_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        dec, subs, emb, t1, t2 = self._plan(query, opt)
        if opt.answer:
            _check(cancel, rid)

            def answer(sub: SubtaskResult) -> list[ExpertAnswer]:
                return self.dispatcher.dispatch(
                    sub.text, sub.selected, sub.weights, [s.expert for s in sub.scores], self.scorer.spec,
                    max_tokens=opt.max_tokens, history=history or (), timeout_s=opt.timeout_s, cancel=cancel,
                )

            # independent sub-tasks are answered concurrently: experts behind an HTTP server (vLLM batches
            # them) overlap; in-process experts sharing one model still take turns on its lock
            if len(subs) > 1:
                with cf.ThreadPoolExecutor(max_workers=len(subs), thread_name_prefix="subtask") as pool:
                    all_answers = list(pool.map(answer, subs))
            else:
                all_answers = [answer(sub) for sub in subs]
            _check(cancel, rid)
            for i, (sub, answers) in enumerate(zip(subs, all_answers, strict=True)):
                self._settle(rid, sub, answers, emb[i])
        t3 = time.perf_counter()
        agg = None
        if opt.answer:
            items = [(s.text, s.expert, s.answer) for s in subs]
            llm = self.decomposer.llm if opt.use_llm else None  # use_llm=false: no router-LLM call at all
            agg = answer_aggregator_resolver.make(opt.aggregate)(items, llm=llm, query=query)
        t4 = time.perf_counter()
        return self._result(rid, query, dec, subs, agg, (t0, t1, t2, t3, t4))

    def route_stream(self, query: str, options: RouteOptions | None = None, *, request_id: str | None = None,
                     history: list[dict[str, str]] | None = None,
                     cancel: threading.Event | None = None) -> Iterator[StreamDelta | RouteResult]:
        """Route one query, yielding the answer's text as the experts generate it, then the :class:`RouteResult`.

        Sub-tasks are sent one after another, but generated together: the later sub-tasks' streams start with
        the first (in-process experts decode them in one batch) and their pieces are held until their turn, so
        a compound answer streams in about the time of its slowest part, not the sum. The pieces, joined, are
        the ``concat`` aggregation (with several sub-tasks, each answer under its numbered sub-task and
        expert). A sub-task whose
        strategy selects several experts is dispatched as in :meth:`route` and its best answer sent in
        one piece; ``aggregate="compose"`` (which needs every answer first) streams the composed reply in
        one piece. ``cancel`` (the client went away) stops the generation under way and skips the rest.
        """
        opt = options or RouteOptions()
        if not opt.answer or opt.aggregate != "concat":
            result = self.route(query, opt, request_id=request_id, history=history)
            if result.answer:
                yield StreamDelta(index=0, text=result.answer)
            yield result
            return
        rid = request_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        dec, subs, emb, t1, t2 = self._plan(query, opt)

        def stream_of(sub: SubtaskResult) -> Generator[tuple[str, str], None, ExpertAnswer]:
            return self.dispatcher.dispatch_stream(
                sub.text, sub.selected[0], [s.expert for s in sub.scores], self.scorer.spec,
                max_tokens=opt.max_tokens, history=history or (), timeout_s=opt.timeout_s, cancel=cancel)

        streamed = [i for i, sub in enumerate(subs) if len(sub.selected) == 1]
        ahead = {i: _run_ahead(stream_of(subs[i])) for i in streamed[1:]}  # generating while the first streams
        for i, sub in enumerate(subs):
            if cancel is not None and cancel.is_set():
                break
            sent = False
            if len(sub.selected) > 1:
                answers = self.dispatcher.dispatch(
                    sub.text, sub.selected, sub.weights, [s.expert for s in sub.scores], self.scorer.spec,
                    max_tokens=opt.max_tokens, history=history or (), timeout_s=opt.timeout_s,
                )
            else:
                pieces = ahead.pop(i, None) or stream_of(sub)
                while True:
                    try:
                        expert, piece = next(pieces)
                    except StopIteration as done:
                        answers = [done.value.model_copy(update={"weight": sub.weights[0]})]
                        break
                    if not sent and len(subs) > 1:
                        yield StreamDelta(index=i, text=_heading(i, sub.text, expert))
                    sent = True
                    yield StreamDelta(index=i, text=piece)
            self._settle(rid, sub, answers, emb[i])
            if not sent:  # several experts, or none could answer: the whole answer in one piece
                if len(subs) > 1:
                    yield StreamDelta(index=i, text=_heading(i, sub.text, sub.expert))
                yield StreamDelta(index=i, text=sub.answer or "(no expert could answer)")
        t3 = time.perf_counter()
        agg = aggregate_concat([(s.text, s.expert, s.answer) for s in subs])
        yield self._result(rid, query, dec, subs, agg, (t0, t1, t2, t3, time.perf_counter()))

    def _plan(self, query: str, opt: RouteOptions) -> tuple[Any, list[SubtaskResult], Any, float, float]:
        """Decompose, score and select: the sub-tasks with their chosen experts (not yet answered)."""
        self.sync()  # experts may have been added or removed by another process (the change counter says)
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
                scores=ranked, flags=list(result.flags[i]),
                expert=sel.experts[0],
            ))
        return dec, subs, emb, t1, t2

    def _settle(self, rid: str, sub: SubtaskResult, answers: list[ExpertAnswer], embedding: Any) -> None:
        """Put a sub-task's answers into its result; record feedback and expert health."""
        ok = [a for a in answers if a.expert is not None]
        best = max(ok, key=lambda a: a.weight) if ok else None
        sub.expert = best.expert if best else None
        sub.answer = best.answer if best else ""
        sub.fell_back = any(a.fell_back for a in answers) or not ok
        sub.attempts = [att for a in answers for att in a.attempts]
        if len(answers) > 1:
            sub.answers = [a.model_dump(include={"expert", "answer", "weight"}) for a in answers]
        self._record(rid, sub, embedding)
        self._update_health(sub.attempts)

    @staticmethod
    def _result(rid: str, query: str, dec: Any, subs: list[SubtaskResult], agg: Aggregation | None,
                marks: tuple[float, float, float, float, float]) -> RouteResult:
        t0, t1, t2, t3, t4 = marks
        return RouteResult(
            request_id=rid, query=query, decomposition_path=dec.path, decomposition_flagged=dec.flagged,
            decomposition_reason=dec.reason, subtasks=subs, answer=agg.answer if agg else "", aggregation=agg,
            timings_ms={"decompose": _ms(t0, t1), "score": _ms(t1, t2), "dispatch": _ms(t2, t3),
                        "aggregate": _ms(t3, t4), "total": _ms(t0, t4)},
        )

    def _record(self, rid: str, sub: SubtaskResult, embedding: Any) -> None:
        if self.feedback is None:
            return
        te_of = {s.expert: s.TE for s in sub.scores}
        for att in sub.attempts:
            if att.skipped or att.cancelled:  # not called, or stopped for the client: says nothing of the expert
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
            if att.skipped or att.cancelled:
                continue
            status = "ok" if att.ok else "down"
            try:
                if self.scorer.spec(att.expert).health != status:
                    self.registry.set_health(att.expert, status, att.error or "answered")
            except Exception as exc:  # an expert removed meanwhile; health is advisory
                log.info("could not update expert health", extra={"expert": att.expert, "error": str(exc)[:200]})

    def close(self) -> None:
        """Stop the dispatcher and the in-process models' decoding threads."""
        self.dispatcher.close()
        if self.dispatcher.pool is not None:
            self.dispatcher.pool.close()


def _live_load(cfg: Any) -> Any:
    """The live-load reader of ``settings.router`` (``None`` when ``live_load`` is off)."""
    if not cfg.live_load:
        return None
    from experts.load import LiveLoad

    return LiveLoad(ttl_s=cfg.load_ttl_s, waiting_threshold=cfg.load_waiting_threshold,
                    busy_requests=cfg.load_busy_requests)


def _run_ahead(stream: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Drain ``stream`` in a background thread from now on; the generator returned replays its items in order
    (waiting for those not produced yet), then returns its return value or raises what it raised."""
    import queue

    items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def drain() -> None:
        try:
            while True:
                items.put(("item", next(stream)))
        except StopIteration as end:
            items.put(("return", end.value))
        except BaseException as exc:  # re-raised in the consumer's thread
            items.put(("raise", exc))

    threading.Thread(target=drain, name="stream-ahead", daemon=True).start()

    def replay() -> Generator[Any, None, Any]:
        while True:
            kind, value = items.get()
            if kind == "return":
                return value
            if kind == "raise":
                raise value
            yield value

    return replay()


def _check(cancel: threading.Event | None, rid: str) -> None:
    if cancel is not None and cancel.is_set():
        raise RouteCancelledError(f"request {rid} was cancelled")


def _served_experts(llm: RouterLLM, pool: Any, timeout_s: float) -> Any:
    """With the router LLM on an OpenAI-compatible server (the managed vLLM, :class:`router.llm.ServedWithFallback`,
    or one at ``llm_url``), a backend factory that sends ``hf`` experts on that same model to the server (in
    process while it is unreachable); else ``None`` (the dispatcher's default factory)."""
    from experts.backends import ServedBackend, make_backend
    from router.llm import OpenAIRouterLLM, Reachable, ServedWithFallback

    if isinstance(llm, ServedWithFallback):
        served, reachable = llm.served, (lambda: not llm.on_fallback)
    elif isinstance(llm, OpenAIRouterLLM):
        served = llm
        reachable = Reachable(llm)
    else:
        return None

    def factory(spec):
        kw = spec.backend_kwargs
        if spec.backend == "hf" and kw.get("model") == served.model and not kw.get("path"):
            return ServedBackend(spec, base_url=served.base_url, served_name=served.model, reachable=reachable,
                                 pool=pool, timeout=timeout_s)
        return make_backend(spec, pool=pool)

    return factory


def _heading(i: int, text: str, expert: str | None) -> str:
    """What :func:`router.dispatch.aggregate_concat` puts before sub-task ``i``'s answer."""
    return ("" if i == 0 else "\n\n") + f"{i + 1}. {text}" + (f" [{expert}]" if expert else "") + "\n"


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000, 3)
