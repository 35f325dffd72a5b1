"""Dispatch (health-aware candidate order) and aggregation, the compose step against the real router LLM."""

from __future__ import annotations

import socket

import pytest
from fakes import FakeBackend

from experts.backends import BackendError
from router.dispatch import Dispatcher, aggregate_compose, aggregate_concat
from router.pipeline import RouteOptions

ITEMS = [
    ("Can my landlord keep my deposit without a reason?", "law",
     "Usually not: a landlord must return the deposit or give a written, itemised reason for keeping it."),
    ("How do I reverse a list in Python?", "code", "Use my_list.reverse() in place, or my_list[::-1] for a copy."),
]
QUERY = "Can my landlord keep my deposit without a reason, and how do I reverse a list in Python?"


def _closed_port_url() -> str:
    with socket.socket() as s:  # nothing listens here once the socket is closed: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_expert_marked_down_is_tried_last_and_the_skip_is_recorded(registry):
    FakeBackend.modes = {}
    registry.set_health("law", "down", "GET /v1/models: ConnectError")
    d = Dispatcher(lambda spec: FakeBackend(spec), timeout_s=5)
    [ans] = d.dispatch("What is a tort?", ["law"], [1.0], ["law", "general", "code"], registry.get)
    assert ans.expert == "general" and ans.fell_back
    skip, call = ans.attempts
    assert skip.expert == "law" and skip.skipped and not skip.ok and "ConnectError" in skip.error
    assert call.expert == "general" and call.ok and call.fallback_for == "law" and not call.skipped

    FakeBackend.modes = {"general": "down", "code": "down"}  # every healthy one fails: the down one is still tried
    [ans] = d.dispatch("What is a tort?", ["law"], [1.0], ["law", "general", "code"], registry.get)
    assert ans.expert == "law" and not ans.fell_back and [a.expert for a in ans.attempts] == ["law", "general", "code", "law"]
    d.close()


def test_compose_falls_back_to_flagged_concat_when_the_llm_is_down():
    from router.llm import OpenAIRouterLLM

    llm = OpenAIRouterLLM(_closed_port_url(), "any", timeout=5, retries=0)
    agg = aggregate_compose(ITEMS, llm=llm, query=QUERY)
    assert agg.method == "concat" and agg.flagged and agg.reason.startswith("compose failed, concatenated instead")
    assert agg.answer == aggregate_concat(ITEMS).answer


@pytest.mark.slow
@pytest.mark.vllm
def test_compose_with_the_real_router_llm(vllm_server):
    from router.llm import OpenAIRouterLLM

    llm = OpenAIRouterLLM(vllm_server.base_url, vllm_server.model, timeout=300, retries=0)
    agg = aggregate_compose(ITEMS, llm=llm, query=QUERY, max_tokens=96)
    assert agg.method == "compose" and not agg.flagged and agg.reason == ""
    assert agg.answer.strip() and agg.answer != aggregate_concat(ITEMS).answer
    assert not agg.answer.startswith("1. ")  # the LLM wrote it, not the numbered concatenation


@pytest.mark.slow
@pytest.mark.vllm
def test_route_composes_with_the_real_router_llm_and_flags_it_when_down(vllm_server, make_router):
    """Full pipeline: the real LLM decomposes and composes; experts are instant fakes. With the LLM's
    endpoint gone the same route still answers: clause splitter + numbered concatenation, both flagged."""
    from router.llm import OpenAIRouterLLM

    llm = OpenAIRouterLLM(vllm_server.base_url, vllm_server.model, timeout=300, retries=0)
    opts = RouteOptions(aggregate="compose", max_tokens=32)
    res = make_router(llm).route(QUERY, opts)
    assert len(res.subtasks) >= 2 and all(s.answer for s in res.subtasks)
    assert res.aggregation.method == "compose" and not res.aggregation.flagged
    assert res.answer.strip() and res.answer == res.aggregation.answer

    down = OpenAIRouterLLM(_closed_port_url(), vllm_server.model, timeout=5, retries=0)
    res = make_router(down).route(QUERY, opts)
    assert res.decomposition_flagged and len(res.subtasks) == 2
    assert res.aggregation.method == "concat" and res.aggregation.flagged
    assert "compose failed" in res.aggregation.reason and res.answer.startswith("1. ")


def test_compose_never_calls_the_llm_when_the_request_forbids_it(make_router):
    """``use_llm=false`` means no router-LLM call at all: compose degrades to a flagged concatenation."""
    from fakes import ScriptedLLM

    llm = ScriptedLLM(["the LLM must not write this"])
    res = make_router(llm).route(QUERY, RouteOptions(aggregate="compose", use_llm=False, max_tokens=16))
    assert llm.calls == 0
    assert len(res.subtasks) >= 2 and res.aggregation.method == "concat" and res.aggregation.flagged
    assert "off for this request" in res.aggregation.reason


# ------------------------------------------------------------------- streaming
class _BreaksOff(FakeBackend):
    """Streams two pieces, then fails (a remote server that dies mid-answer)."""

    def stream(self, messages, *, max_tokens=128, temperature=0.0, cancel=None):
        yield "Usually "
        yield "not"
        raise BackendError(f"{self.spec.name}: connection reset")


def test_stream_falls_back_only_before_the_first_piece(registry):
    FakeBackend.modes = {"law": "down"}
    d = Dispatcher(lambda spec: FakeBackend(spec), timeout_s=5)
    pieces = d.dispatch_stream("What is a tort?", "law", ["law", "general", "code"], registry.get)
    got = []
    while True:
        try:
            got.append(next(pieces))
        except StopIteration as done:
            ans = done.value
            break
    assert got == [("general", "[general] answer to: What is a tort?")]
    assert ans.expert == "general" and ans.fell_back and ans.answer == got[0][1]
    assert [(a.expert, a.ok) for a in ans.attempts] == [("law", False), ("general", True)]

    d = Dispatcher(lambda spec: _BreaksOff(spec), timeout_s=5)
    pieces = d.dispatch_stream("What is a tort?", "law", ["law", "general"], registry.get)
    assert [p for _, p in pieces] == ["Usually ", "not"]
    # the partial answer stays: nobody else is asked once the client has text
    FakeBackend.modes = {}
    d.close()


def test_stream_timeout_and_client_cancel(registry):
    import threading

    FakeBackend.modes = {"law": "slow"}
    d = Dispatcher(lambda spec: FakeBackend(spec), timeout_s=0.3)
    gen = d.dispatch_stream("What is a tort?", "law", ["law", "general"], registry.get)
    assert [e for e, _ in gen] == ["general"]  # law timed out before its first piece

    gone = threading.Event()
    gone.set()  # the client left while law was generating
    d = Dispatcher(lambda spec: FakeBackend(spec), timeout_s=5)
    gen = d.dispatch_stream("What is a tort?", "law", ["law"], registry.get, cancel=gone)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        ans = done.value
    assert ans.expert is None and ans.attempts == []  # nothing started once the client was gone

    leaving = threading.Event()
    threading.Timer(0.2, leaving.set).start()  # the client leaves while law is generating
    gen = d.dispatch_stream("What is a tort?", "law", ["law", "general"], registry.get, cancel=leaving)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        ans = done.value
    [att] = ans.attempts  # stopped, and no fallback for a client that is gone
    assert att.expert == "law" and att.cancelled and not att.ok and ans.expert is None
    FakeBackend.modes = {}
    d.close()
