"""Live load from vLLM's /metrics: parsing, the load scalar, saturation, caching and dead servers."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from experts.load import LiveLoad, LoadSample, metrics_url, parse_vllm_metrics
from experts.registry import ExpertSpec

# the shape vLLM 0.32 exports (label sets per served model; LoRA adapters share the engine)
PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2-135m"} %(running)s
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2-135m"} %(waiting)s
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2-135m"} %(kv)s
"""


class _Metrics(BaseHTTPRequestHandler):
    state: ClassVar[dict] = {"running": 1, "waiting": 0, "kv": 0.25}
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        body = (PAGE % self.state).encode() if self.path == "/metrics" else b"not found"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Metrics.state, _Metrics.hits = {"running": 1, "waiting": 0, "kv": 0.25}, 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_parse_and_the_load_scalar():
    values = parse_vllm_metrics(PAGE % {"running": 2, "waiting": 3, "kv": 0.5})
    assert values == {"running": 2.0, "waiting": 3.0, "kv_cache": 0.5}
    s = LoadSample(**values, at=0.0, busy_requests=8, waiting_threshold=3)
    assert s.load == pytest.approx(0.5 * 0.5 + 0.5 * 1.0) and s.saturated
    assert LoadSample(0, 0, 0.0, at=0.0).load == 0.0 and not LoadSample(0, 0, 0.0, at=0.0).saturated
    assert parse_vllm_metrics("# nothing of vLLM\nfoo 1\n") is None
    assert metrics_url("http://h:1/v1/") == "http://h:1/metrics"


def test_live_load_is_cached_per_server_and_a_dead_server_is_none(server):
    live = LiveLoad(ttl_s=0.3)
    specs = [ExpertSpec(name="a", domain="law", backend="openai", backend_kwargs={"base_url": server, "model": "m"}),
             ExpertSpec(name="b", domain="law", backend="openai", backend_kwargs={"base_url": server, "model": "lora"}),
             ExpertSpec(name="dead", domain="law", backend="openai",
                        backend_kwargs={"base_url": "http://127.0.0.1:9/v1", "model": "m"}),
             ExpertSpec(name="local", domain="law")]
    got = live.for_experts(specs)
    assert set(got) == {"a", "b"} and got["a"].running == 1 and _Metrics.hits == 1  # one fetch for both
    _Metrics.state = {"running": 4, "waiting": 6, "kv": 0.9}
    assert live.for_experts(specs)["a"].waiting == 0  # still cached
    time.sleep(0.35)
    assert live.for_experts(specs)["a"].saturated
