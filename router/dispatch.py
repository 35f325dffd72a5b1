"""Dispatch and aggregation: send each sub-task to its chosen expert(s), fall back, combine answers.

Each selected expert gets ``timeout_s`` to answer. On an error or a timeout the next-best expert by
TE that has not been tried yet answers instead (at most ``max_fallbacks`` times); every attempt is
recorded. A timed-out call is cancelled, not just abandoned: the dispatcher sets the call's cancel
event, so an in-process model stops within a decoding step and frees its lock and worker thread for
the next request (see :mod:`experts.backends`). Backends are built once per expert (and rebuilt when
the expert's settings change).

Answer aggregation (:data:`answer_aggregator_resolver`, not to be confused with distillation's
``teacher_aggregator_resolver``): ``concat`` (default) numbers the sub-tasks and puts each answer
under its sub-task; ``compose`` asks the router LLM to write one reply from them and falls back to
``concat`` (flagged) when it cannot.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from core.resolver import Resolver
from experts.backends import AnyEvent, ExpertBackend, ModelPool, make_backend
from experts.registry import ExpertSpec

log = logging.getLogger(__name__)

__all__ = [
    "Aggregation",
    "AnswerAggregator",
    "Attempt",
    "ComposeAggregator",
    "ConcatAggregator",
    "Dispatcher",
    "ExpertAnswer",
    "aggregate_compose",
    "aggregate_concat",
    "answer_aggregator_resolver",
]


class _Aborted(Exception):
    """The caller set the abort event while waiting for an expert."""


class Attempt(BaseModel):
    expert: str
    ok: bool
    latency_ms: float
    error: str = ""
    fallback_for: str | None = Field(None, description="the expert this attempt replaced")
    skipped: bool = Field(False, description="not called: marked down, so healthy experts went first")
    cancelled: bool = Field(False, description="stopped because the client went away: says nothing of the expert")


class ExpertAnswer(BaseModel):
    expert: str | None
    answer: str
    weight: float = 1.0
    attempts: list[Attempt] = Field(default_factory=list)
    fell_back: bool = False


class Dispatcher:
    """Calls expert backends with a timeout and next-best fallback.

    Args:
        backend_factory: ``spec -> ExpertBackend`` (default: :func:`experts.backends.make_backend` with
            ``pool``).
        pool: the shared :class:`ModelPool` in-process experts run on (required without ``backend_factory``).
        timeout_s: per-expert answer budget.
        max_fallbacks: how many replacement experts to try per selected expert.
        max_workers: threads for expert calls (a timed-out in-process call ends within a decoding step; a
            remote one at its HTTP client's timeout).
    """

    def __init__(self, backend_factory: Callable[[ExpertSpec], ExpertBackend] | None = None, *,
                 pool: ModelPool | None = None, timeout_s: float = 60.0, max_fallbacks: int = 2,
                 max_workers: int = 8):
        if backend_factory is None and pool is None:
            raise ValueError("Dispatcher needs a backend_factory or a model pool")
        self.pool = pool
        self.backend_factory = backend_factory or (lambda spec: make_backend(spec, pool=pool))
        self.timeout_s = timeout_s
        self.max_fallbacks = max_fallbacks
        self._executor = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="expert")
        self._backends: dict[str, tuple[str, ExpertBackend]] = {}
        self._lock = threading.Lock()

    def backend(self, spec: ExpertSpec) -> ExpertBackend:
        key = json.dumps([spec.backend, spec.backend_kwargs, spec.system_prompt], sort_keys=True)
        with self._lock:
            cached = self._backends.get(spec.name)
            if cached is None or cached[0] != key:
                self._backends[spec.name] = (key, self.backend_factory(spec))
            return self._backends[spec.name][1]

    def forget(self, name: str) -> None:
        with self._lock:
            self._backends.pop(name, None)

    def call(self, spec: ExpertSpec, messages: list[dict[str, str]], *, max_tokens: int,
             timeout_s: float | None = None, abort: threading.Event | None = None) -> tuple[str | None, Attempt]:
        """One expert call with a timeout; never raises. On timeout, or when ``abort`` is set (the caller
        gave up), the call is cancelled (see the module doc)."""
        t0 = time.perf_counter()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        cancel = threading.Event()
        fut: cf.Future | None = None
        try:
            backend = self.backend(spec)
            fut = self._executor.submit(backend.generate, messages, max_tokens=max_tokens, cancel=cancel)
            text = self._wait(fut, t0 + timeout, abort)
            if not isinstance(text, str) or not text.strip():
                raise ValueError("empty answer")
            return text, Attempt(expert=spec.name, ok=True, latency_ms=_ms(t0))
        except (cf.TimeoutError, _Aborted) as exc:
            cancel.set()
            if fut is not None:
                fut.cancel()  # still queued behind busy workers: never starts
            if isinstance(exc, _Aborted):  # the caller left: says nothing of the expert
                return None, Attempt(expert=spec.name, ok=False, latency_ms=_ms(t0), cancelled=True,
                                     error="cancelled: the request was abandoned (generation cancelled)")
            err = f"timeout after {timeout:g}s (generation cancelled)"
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        log.warning("expert call failed", extra={"expert": spec.name, "error": err[:300]})
        return None, Attempt(expert=spec.name, ok=False, latency_ms=_ms(t0), error=err[:500])

    @staticmethod
    def _wait(fut: cf.Future, deadline: float, abort: threading.Event | None) -> Any:
        """``fut.result()`` by ``deadline`` (perf_counter time), checking ``abort`` every 50 ms.

        Raises:
            concurrent.futures.TimeoutError: at the deadline. _Aborted: ``abort`` was set.
        """
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise cf.TimeoutError
            try:
                return fut.result(timeout=remaining if abort is None else min(remaining, 0.05))
            except cf.TimeoutError:
                if abort is not None and abort.is_set():
                    raise _Aborted from None

    def dispatch(self, text: str, selected: Sequence[str], weights: Sequence[float], ranked: Sequence[str],
                 spec_of: Callable[[str], ExpertSpec], *, max_tokens: int = 128,
                 history: Sequence[dict[str, str]] = (), timeout_s: float | None = None,
                 cancel: threading.Event | None = None) -> list[ExpertAnswer]:
        """Ask each selected expert; replace failures with the next-best untried expert in ``ranked``.

        ``cancel`` (set by another thread) stops the running call within a decoding step and tries no
        further expert.

        Experts the registry marks ``down`` (health probe or an earlier failed call) are tried after
        every healthy candidate; a selected expert passed over that way is recorded as a failed attempt
        with the reason, and the answer counts as a fallback.

        Returns:
            one :class:`ExpertAnswer` per selected expert (``expert=None`` when every try failed).
        """
        messages = [*history, {"role": "user", "content": text}]
        tried: set[str] = set()
        out: list[ExpertAnswer] = []
        for name, weight in zip(selected, weights, strict=True):
            attempts: list[Attempt] = []
            candidates = _healthy_first([name] + [n for n in ranked if n != name and n not in selected], spec_of)
            if candidates[0][0] != name:
                detail = next(why for cand, why in candidates if cand == name)
                attempts.append(Attempt(expert=name, ok=False, latency_ms=0.0, skipped=True, error=detail[:500]))
            answer: str | None = None
            used: str | None = None
            calls = 0
            for cand, _ in candidates:
                if cand in tried or calls > self.max_fallbacks or (cancel is not None and cancel.is_set()):
                    continue
                tried.add(cand)
                calls += 1
                try:
                    spec = spec_of(cand)
                except Exception as exc:  # removed from the registry meanwhile
                    attempts.append(Attempt(expert=cand, ok=False, latency_ms=0.0, error=str(exc)[:300]))
                    continue
                answer, att = self.call(spec, messages, max_tokens=max_tokens, timeout_s=timeout_s, abort=cancel)
                if cand != name:
                    att.fallback_for = name
                attempts.append(att)
                if answer is not None:
                    used = cand
                    break
            out.append(ExpertAnswer(
                expert=used, answer=answer or "", weight=weight, attempts=attempts,
                fell_back=used is not None and used != name,
            ))
        return out

    def dispatch_stream(self, text: str, name: str, ranked: Sequence[str], spec_of: Callable[[str], ExpertSpec],
                        *, max_tokens: int = 128, history: Sequence[dict[str, str]] = (),
                        timeout_s: float | None = None,
                        cancel: threading.Event | None = None) -> Generator[tuple[str, str], None, ExpertAnswer]:
        """Stream one sub-task's answer from expert ``name``: yields ``(expert, piece)``, returns the
        :class:`ExpertAnswer`.

        The next-best expert in ``ranked`` takes over only while nothing has been yielded (an expert that
        fails, or exceeds ``timeout_s`` before its first piece); an expert that breaks off later keeps its
        partial answer and the failed attempt records why. ``timeout_s`` bounds each call (first piece to
        last). ``cancel`` (the client went away) stops the generation and ends the stream.
        """
        messages = [*history, {"role": "user", "content": text}]
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts: list[Attempt] = []
        candidates = _healthy_first([name] + [n for n in ranked if n != name], spec_of)
        if candidates[0][0] != name:
            detail = next(why for cand, why in candidates if cand == name)
            attempts.append(Attempt(expert=name, ok=False, latency_ms=0.0, skipped=True, error=detail[:500]))
        for calls, (cand, _) in enumerate(candidates):
            if calls > self.max_fallbacks or (cancel is not None and cancel.is_set()):
                break
            try:
                spec = spec_of(cand)
            except Exception as exc:  # removed from the registry meanwhile
                attempts.append(Attempt(expert=cand, ok=False, latency_ms=0.0, error=str(exc)[:300]))
                continue
            t0 = time.perf_counter()
            expired = threading.Event()
            watchdog = threading.Timer(timeout, expired.set)
            watchdog.daemon = True
            watchdog.start()
            parts: list[str] = []
            err = ""
            pieces = None
            try:
                pieces = self.backend(spec).stream(messages, max_tokens=max_tokens, cancel=AnyEvent(expired, cancel))
                for piece in pieces:
                    parts.append(piece)
                    yield cand, piece
                if not "".join(parts).strip():
                    raise ValueError("empty answer")
            except Exception as exc:
                err = (f"timeout after {timeout:g}s (generation cancelled)" if expired.is_set()
                       else f"{type(exc).__name__}: {exc}")
            finally:
                watchdog.cancel()
                if pieces is not None:
                    pieces.close()  # a consumer that left early: stop the generation now
            gone = bool(err) and cancel is not None and cancel.is_set()
            att = Attempt(expert=cand, ok=not err, latency_ms=_ms(t0), error=err[:500], cancelled=gone,
                          fallback_for=name if cand != name else None)
            attempts.append(att)
            if gone:
                log.info("expert stream stopped: the client went away", extra={"expert": cand})
            elif err:
                log.warning("expert stream failed", extra={"expert": cand, "error": err[:300]})
            if parts:
                return ExpertAnswer(expert=cand, answer="".join(parts).strip(), attempts=attempts,
                                    fell_back=cand != name)
        return ExpertAnswer(expert=None, answer="", attempts=attempts, fell_back=False)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for _, backend in self._backends.values():
            backend.close()


class Aggregation(BaseModel):
    answer: str
    method: str
    flagged: bool = False
    reason: str = ""


def aggregate_concat(items: Sequence[tuple[str, str | None, str]], **_: Any) -> Aggregation:
    """Structured concatenation of ``(sub-task, expert, answer)`` triples."""
    if len(items) == 1:
        text, expert, answer = items[0]
        return Aggregation(answer=answer or "(no expert could answer)", method="concat")
    parts = []
    for i, (text, expert, answer) in enumerate(items, 1):
        who = f" [{expert}]" if expert else ""
        parts.append(f"{i}. {text}{who}\n{answer or '(no expert could answer)'}")
    return Aggregation(answer="\n\n".join(parts), method="concat")


def aggregate_compose(items: Sequence[tuple[str, str | None, str]], *, llm: Any = None, query: str = "",
                      max_tokens: int = 384, **_: Any) -> Aggregation:
    """Ask the router LLM to merge the answers into one reply; ``concat`` (flagged) if that fails or no
    router LLM may be used (``llm=None``, e.g. a request with ``use_llm=false``)."""
    if len(items) == 1:
        return aggregate_concat(items)
    if llm is None:
        agg = aggregate_concat(items)
        agg.flagged, agg.reason = True, "compose needs the router LLM, which is off for this request: concatenated"
        return agg
    notes = "\n\n".join(f"Sub-question: {t}\nExpert answer: {a or '(none)'}" for t, _, a in items)
    messages = [
        {"role": "system", "content": "Combine the expert answers into one clear reply to the user's message. "
                                      "Keep every fact; do not add new claims."},
        {"role": "user", "content": f"User message: {query}\n\n{notes}"},
    ]
    try:
        text = llm.complete(messages, max_tokens=max_tokens).strip()
        if not text:
            raise ValueError("empty composition")
        return Aggregation(answer=text, method="compose")
    except Exception as exc:
        agg = aggregate_concat(items)
        agg.flagged, agg.reason = True, f"compose failed, concatenated instead: {exc}"[:300]
        log.warning("compose aggregation fell back to concat", extra={"error": str(exc)[:200]})
        return agg


class AnswerAggregator(ABC):
    """Combines the ``(sub-task, expert, answer)`` triples of one request into one reply."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, items: Sequence[tuple[str, str | None, str]], *, llm: Any = None,
                 query: str = "") -> Aggregation:
        """One :class:`Aggregation`; ``llm`` is the router LLM, ``None`` when the request may not use it."""


class ConcatAggregator(AnswerAggregator):
    """Numbered sub-tasks, each answer under its sub-task (:func:`aggregate_concat`)."""

    name = "concat"

    def __call__(self, items, *, llm=None, query="") -> Aggregation:
        return aggregate_concat(items)


class ComposeAggregator(AnswerAggregator):
    """The router LLM writes one reply; ``concat`` (flagged) when it cannot (:func:`aggregate_compose`)."""

    name = "compose"

    def __init__(self, max_tokens: int = 384) -> None:
        self.max_tokens = max_tokens

    def __call__(self, items, *, llm=None, query="") -> Aggregation:
        return aggregate_compose(items, llm=llm, query=query, max_tokens=self.max_tokens)


answer_aggregator_resolver: Resolver[AnswerAggregator] = Resolver(
    AnswerAggregator, [ConcatAggregator, ComposeAggregator], suffix="aggregator", default="concat",
    kind="answer aggregator")


def _healthy_first(names: Sequence[str], spec_of: Callable[[str], ExpertSpec]) -> list[tuple[str, str]]:
    """``(name, why_last)`` in the given order, except that experts marked ``down`` move to the end
    (kept, not dropped: the mark may be stale and a down expert beats no answer)."""
    up, down = [], []
    for n in names:
        try:
            spec = spec_of(n)
        except Exception:  # removed meanwhile: the call loop records it
            up.append((n, ""))
            continue
        if spec.health == "down":
            down.append((n, f"marked down ({spec.health_detail or 'no detail'}); healthy experts tried first"))
        else:
            up.append((n, ""))
    return up + down


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
