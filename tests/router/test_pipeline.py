import json
import time

import pytest
from fakes import FakeBackend, ScriptedLLM

from core.settings import Settings
from qsef.scores import ExpertScore
from router.pipeline import RouteOptions

Q = "What dose of ibuprofen is safe for a fever, and how do I deduct medical costs on my taxes?"


def test_route_end_to_end_with_flagged_fallback(make_router):
    router = make_router()  # LLM down
    res = router.route(Q)
    assert res.decomposition_path == "clause_splitter" and res.decomposition_flagged
    assert [s.expert for s in res.subtasks] == ["medicine", "finance"]
    assert all(isinstance(s.scores[0], ExpertScore) and s.scores[0].rank == 1 for s in res.subtasks)
    assert all(sum(x.P for x in s.scores) == pytest.approx(1.0) for s in res.subtasks)  # P travels with the route
    assert "1. " in res.answer and "[finance]" in res.answer
    assert set(res.timings_ms) == {"decompose", "score", "dispatch", "aggregate", "total"}


def test_llm_path(make_router):
    good = {"subtasks": [{"subtask": "What dose of ibuprofen is safe for a fever?", "domain": "medicine"},
                         {"subtask": "How do I deduct medical costs on my taxes?", "domain": "finance"}]}
    res = make_router(ScriptedLLM([json.dumps(good)])).route(Q)
    assert res.decomposition_path == "llm" and not res.decomposition_flagged


def test_a_clear_split_is_routed_without_the_llm(make_router):
    llm = ScriptedLLM(down=True)
    res = make_router(llm, clear_split=True).route(Q)
    assert res.decomposition_path == "clear_split" and not res.decomposition_flagged and llm.calls == 0
    assert [s.expert for s in res.subtasks] == ["medicine", "finance"]


def test_expert_down_falls_back_to_next_best(make_router):
    router = make_router()
    FakeBackend.modes["law"] = "down"
    res = router.route("Can my landlord evict my tenant without a court order?")
    sub = res.subtasks[0]
    assert sub.selected == ["law"] and sub.expert != "law" and sub.fell_back
    assert sub.attempts[0].expert == "law" and not sub.attempts[0].ok
    assert sub.attempts[1].ok and sub.attempts[1].fallback_for == "law"
    assert sub.expert == sub.scores[1].expert  # the next-best by TE
    assert router.registry.get("law").health == "down" and router.registry.get(sub.expert).health == "ok"
    # the failure is also history: law's C_model on this kind of task rose
    again = router.route("Can my landlord evict my tenant without a court order?").subtasks[0]
    law = lambda s: next(x for x in s.scores if x.expert == "law")  # noqa: E731
    assert law(again).C_model > law(sub).C_model


def test_expert_slow_times_out_to_next_best(make_router):
    router = make_router(timeout_s=0.3)
    FakeBackend.modes["code"] = "slow"
    res = router.route("How do I sort a list in Python?")
    sub = res.subtasks[0]
    assert sub.attempts[0].expert == "code" and "timeout" in sub.attempts[0].error
    assert sub.expert not in (None, "code")


def test_all_experts_down_still_answers_a_result(make_router):
    router = make_router()
    for n in ("medicine", "law", "code", "finance", "general"):
        FakeBackend.modes[n] = "down"
    res = router.route("What is a tort?")
    assert res.subtasks[0].expert is None and "no expert could answer" in res.answer


def test_top_k_and_cost_aware(make_router, registry):
    router = make_router()
    res = router.route("What is a tort?", RouteOptions(strategy="top_k", k=2))
    assert len(res.subtasks[0].selected) == 2 and len(res.subtasks[0].answers) == 2
    assert abs(sum(res.subtasks[0].weights) - 1) < 1e-5
    registry.update("law", cost=100.0)
    res = router.route("What is a tort?", RouteOptions(strategy="cost_aware", cost_lambda=0.001, k=5))
    assert "law" not in res.subtasks[0].selected


def test_tau_is_compared_with_the_calibrated_share_p(make_router):
    """The low-confidence threshold reads P = TE / sum TE of the best expert (not raw TE, whose scale
    follows the fitted weights): just under P keeps the best expert, just over it falls back, flagged."""
    router = make_router()
    q = "What is a tort?"
    best = router.route(q, RouteOptions(answer=False)).subtasks[0]
    p, te = best.scores[0].P, best.scores[0].TE
    assert abs(p - te) > 0.05  # the two readings of tau would disagree here
    keep = router.route(q, RouteOptions(answer=False, tau=p - 0.01)).subtasks[0]
    assert keep.selected == [best.scores[0].expert] and not keep.low_confidence and keep.strategy == "threshold"
    low = router.route(q, RouteOptions(answer=False, tau=min(p + 0.01, 1.0))).subtasks[0]
    assert low.selected == ["general"] and low.low_confidence and f"P {p:.3f}" in low.reason


def test_strategy_and_aggregator_names_are_validated_by_their_resolvers():
    assert RouteOptions(strategy="Top-K", aggregate="COMPOSE").strategy == "top_k"
    with pytest.raises(ValueError, match=r"unknown selection strategy 'magic'; choose one of \['argmax'"):
        RouteOptions(strategy="magic")
    with pytest.raises(ValueError, match=r"unknown answer aggregator 'vote'; choose one of \['compose', 'concat'\]"):
        RouteOptions(aggregate="vote")


def test_no_answer_mode_skips_experts(make_router):
    res = make_router().route("What is a tort?", RouteOptions(answer=False))
    assert res.answer == "" and res.subtasks[0].attempts == []


def test_feedback_updates_history_used_by_c_model(make_router):
    router = make_router()
    q = "Can my landlord evict my tenant without a court order?"
    before = router.route(q)
    law_before = next(s for s in before.subtasks[0].scores if s.expert == "law").C_model
    for _ in range(3):
        r = router.route(q)
        router.feedback.rate(r.request_id, rating=0.0)
    after = router.route(q)
    law_after = next(s for s in after.subtasks[0].scores if s.expert == "law").C_model
    assert law_after > law_before


def test_expert_with_saved_profile_folder(make_router, registry, tmp_path):
    from fakes import HashEncoder

    from experts.registry import ExpertSpec
    from qsef.profiles import build_domain_profile

    prof = build_domain_profile("law", settings=Settings(home=tmp_path), encoder=HashEncoder(), passages=["tenant landlord lease eviction court"])
    prof.save(tmp_path / "tenancy-profile")
    registry.add(ExpertSpec(name="tenancy", domain="law", profile={"dir": str(tmp_path / "tenancy-profile")},
                            size_params=1_000_000))
    res = make_router().route("Can my landlord evict me from my lease?")
    assert "tenancy" in [s.expert for s in res.subtasks[0].scores]


def test_route_stream_pieces_join_to_the_routed_answer(make_router):
    """Streaming sends the concat aggregation piece by piece, sub-task by sub-task; the last event is the result."""
    from router.pipeline import RouteResult, StreamDelta

    router = make_router()
    FakeBackend.modes["medicine"] = "down"  # falls back before its first piece: the heading names who answered
    events = list(router.route_stream(Q))
    *deltas, result = events
    assert isinstance(result, RouteResult) and all(isinstance(e, StreamDelta) for e in deltas)
    assert "".join(d.text for d in deltas) == result.answer == router.route(Q).answer
    assert [d.index for d in deltas] == sorted(d.index for d in deltas) and {d.index for d in deltas} == {0, 1}
    med = result.subtasks[0]
    assert med.fell_back and med.expert != "medicine" and f"[{med.expert}]" in deltas[0].text
    assert set(result.timings_ms) == {"decompose", "score", "dispatch", "aggregate", "total"}


def test_route_stream_with_several_experts_per_subtask(make_router):
    from router.pipeline import RouteResult

    router = make_router()
    opts = RouteOptions(strategy="top_k", k=2)
    *deltas, result = list(router.route_stream("What is a tort?", opts))
    assert isinstance(result, RouteResult) and len(result.subtasks[0].answers) == 2
    assert "".join(d.text for d in deltas) == result.answer


def test_independent_subtasks_are_dispatched_concurrently(make_router):
    router = make_router(timeout_s=10)
    FakeBackend.modes.update(medicine="slow", finance="slow")  # each answer takes 2 s
    res = router.route(Q)
    assert [s.expert for s in res.subtasks] == ["medicine", "finance"]
    assert all(s.attempts[0].latency_ms >= 1900 for s in res.subtasks)
    assert res.timings_ms["dispatch"] < 3500  # both at once, not 2 s + 2 s


@pytest.mark.parametrize("precision,on_server", [("fp32", "auto"), ("int8", "always")])
def test_experts_on_the_served_model_go_to_the_server(tmp_path, precision, on_server):
    """router_backend=vllm: hf experts on the router LLM's model are answered by its server — in process while
    the server is unreachable (nothing listens on the port here)."""
    import socket

    from core.settings import RouterSettings, Settings
    from experts.backends import HFBackend, ServedBackend
    from router.pipeline import Router

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(home=tmp_path, router_backend="vllm", llm_port=port, local_precision=precision,
                        router=RouterSettings(experts_on_server=on_server))
    router = Router.from_settings(settings)
    try:
        law = router.registry.get("law")
        assert law.backend == "hf" and law.backend_kwargs["model"] == settings.router_model
        backend = router.dispatcher.backend(law)
        assert isinstance(backend, ServedBackend) and backend.remote.base_url == f"http://127.0.0.1:{port}/v1"
        assert isinstance(backend._pick(), HFBackend)  # unreachable: in process
        assert router.decomposer.llm.on_fallback and "fallback" in router.decomposer.llm.describe()
    finally:
        router.close()


@pytest.mark.parametrize("precision,on_server", [("int8", "auto"), ("fp32", "never")])
def test_experts_stay_in_process(tmp_path, precision, on_server):
    """int8 in process decodes faster than the fp32 server here, so auto keeps the experts local; never does always."""
    from core.settings import RouterSettings, Settings
    from experts.backends import HFBackend
    from router.pipeline import Router

    settings = Settings(home=tmp_path, router_backend="vllm", llm_port=1, local_precision=precision,
                        router=RouterSettings(experts_on_server=on_server))
    router = Router.from_settings(settings)
    try:
        assert type(router.dispatcher.backend(router.registry.get("law"))) is HFBackend
    finally:
        router.close()


def test_streamed_subtasks_are_generated_together(make_router):
    """Two slow sub-tasks (2 s each) stream in order, the second generated while the first streams."""
    from router.pipeline import RouteResult

    router = make_router(timeout_s=10)
    FakeBackend.modes.update(medicine="slow", finance="slow")
    t0 = time.monotonic()
    *deltas, result = list(router.route_stream(Q))
    assert time.monotonic() - t0 < 3.5  # 2 s + 2 s if one after the other
    assert isinstance(result, RouteResult) and [s.expert for s in result.subtasks] == ["medicine", "finance"]
    assert [d.index for d in deltas] == sorted(d.index for d in deltas)
    assert "".join(d.text for d in deltas) == result.answer


def test_a_failing_stream_run_ahead_still_falls_back(make_router):
    """The second sub-task's expert is down: its stream, run ahead, falls back to the next-best as before."""
    router = make_router()
    FakeBackend.modes["finance"] = "down"
    *deltas, result = list(router.route_stream(Q))
    fin = result.subtasks[1]
    assert fin.fell_back and fin.expert != "finance" and f"[{fin.expert}]" in "".join(d.text for d in deltas)
