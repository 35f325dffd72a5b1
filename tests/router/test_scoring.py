"""One expert whose profile cannot be built or scored is left out, flagged, and the rest keep scoring."""

from __future__ import annotations

import numpy as np
from fakes import HashEncoder

from core.settings import Settings
from experts.registry import ExpertSpec
from qsef.profiles import build_domain_profile


def _wrong_width_profile(folder):
    prof = build_domain_profile("law", settings=Settings(home=folder.parent), encoder=HashEncoder(),
                                passages=["tenant landlord lease"])
    prof.with_centroid(np.ones(7, dtype=np.float32), prototypes=None).save(folder)


def test_an_expert_whose_profile_breaks_is_skipped_and_flagged(make_router, registry, tmp_path):
    _wrong_width_profile(tmp_path / "bad-profile")
    registry.add(ExpertSpec(name="tenancy", domain="law", profile={"dir": str(tmp_path / "bad-profile")}))
    router = make_router()
    result = router.scorer.score(["Can my landlord evict me?"])
    assert "tenancy" not in result.names and len(result.names) == 5
    assert "expert_unavailable:tenancy" in result.flags[0]
    assert "7 dimensions" in router.scorer.unavailable["tenancy"]
    routed = router.route("Can my landlord evict me?")
    assert routed.subtasks[0].expert == "law" and "expert_unavailable:tenancy" in routed.subtasks[0].flags


def test_an_expert_that_fails_at_scoring_time_is_found_and_skipped(make_router, registry, monkeypatch):
    router = make_router()
    engine = router.scorer.engine
    real = engine.score

    def score(texts, profiles, **kw):  # injected fault: the law profile makes the engine raise
        if any(p.name == "law" for p in profiles):
            raise TypeError("unsupported operand type(s)")
        return real(texts, profiles, **kw)

    monkeypatch.setattr(engine, "score", score)
    result = router.scorer.score(["What is a tort?"])
    assert "law" not in result.names and "expert_unavailable:law" in result.flags[0]
    assert "TypeError" in router.scorer.unavailable["law"]


def test_a_saturated_expert_sheds_its_traffic_to_the_next_best_flagged(make_router, registry):
    """Two law experts on two "vLLM servers" (real HTTP /metrics pages); the better one is saturated:
    C_model rises with its live load, and the sub-task goes to the other law expert, flagged."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from experts.load import LiveLoad

    waiting = {"busy": 9, "idle": 0}

    def handler(name):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = (f"vllm:num_requests_running {4 if waiting[name] else 0}\n"
                        f"vllm:num_requests_waiting {waiting[name]}\nvllm:kv_cache_usage_perc 0.5\n").encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        return H

    servers = {n: ThreadingHTTPServer(("127.0.0.1", 0), handler(n)) for n in waiting}
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        texts = ["contract court lawsuit legal rights tenant landlord statute judge tort"]
        for name, extra in (("busy", texts * 3), ("idle", texts)):  # "busy" fits the text better
            url = f"http://127.0.0.1:{servers[name].server_address[1]}/v1"
            registry.add(ExpertSpec(name=name, domain="law", backend="openai", size_params=500_000_000,
                                    backend_kwargs={"base_url": url, "model": "m"}, profile={"texts": extra}))
        registry.update("law", enabled=False)
        router = make_router()
        q = "Can my landlord sue me in court over the tenant contract?"
        calm = router.scorer.score([q])
        best = calm.names[int(np.argmax(calm.TE[0]))]
        router.scorer.live_load = LiveLoad(ttl_s=60)
        loaded = router.scorer.score([q])
        assert "saturated:busy" in loaded.flags[0] and "live_load" in loaded.flags[0]
        j = loaded.names.index("busy")
        assert loaded.components["c_model"][0, j] > calm.components["c_model"][0, j]
        sel = router.scorer.select(loaded, 0)
        assert "busy" not in sel.experts and "shed load: busy saturated" in sel.reason
        assert best == "busy" and "shed_load:busy" in loaded.flags[0]
        routed = router.route(q)
        assert routed.subtasks[0].expert != "busy" and "shed_load:busy" in routed.subtasks[0].flags
    finally:
        for s in servers.values():
            s.shutdown()
