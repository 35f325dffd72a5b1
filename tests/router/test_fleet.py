"""``qsef fleet``: the fleet file is validated before anything starts (unknown model, busy port, duplicates,
an expert asking for a model its server does not serve); remote servers are registered by URL and
unregistered by ``down``; with a real vLLM server, ``up`` attaches to it and ``status`` reads its live load."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.cli import main
from core.settings import Settings
from experts.registry import ExpertRegistry
from router.fleet import FleetError, FleetManager, load_fleet


def _write(tmp_path, text: str):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def _manager(tmp_path, text: str, settings=None) -> FleetManager:
    path = _write(tmp_path, text)
    return FleetManager(load_fleet(path), settings=settings or Settings(home=tmp_path),
                        registry=ExpertRegistry(tmp_path / "experts.sqlite"), source=str(path))


@pytest.mark.parametrize(("text", "message"), [
    ("servers:\n - {name: a, model: gpt-17, port: 8039, experts: [{name: x, domain: law}]}\n",
     "unknown model 'gpt-17'; choose from"),
    ("servers:\n - {name: a, model: minilm, port: 8039, experts: [{name: x, domain: law}]}\n",
     "is a encoder, not an LLM"),
    ("servers:\n - {name: a, model: smollm2-135m, port: 8039, lora: {l: adapters/none}, experts: [{name: x, domain: law}]}\n",
     "holds no adapter_config.json"),
    ("servers:\n - {name: a, model: smollm2-135m, port: 8039, lora: {l: /etc}, experts: [{name: x, domain: law}]}\n",
     "outside the data directory"),
])
def test_bad_entries_are_refused_before_anything_starts(tmp_path, text, message):
    with pytest.raises(FleetError, match=message):
        _manager(tmp_path, text).check()


@pytest.mark.parametrize(("text", "message"), [
    ("servers:\n - {name: a, model: m, port: 8038, experts: [{name: x, domain: law}]}\n"
     " - {name: b, model: m, port: 8038, experts: [{name: y, domain: law}]}\n", "duplicate port: 8038"),
    ("servers:\n - {name: a, model: m, experts: [{name: x, domain: law}]}\n", "either port"),
    ("servers:\n - {name: a, model: m, port: 8038, experts: [{name: x, domain: law, model: other}]}\n",
     "does not serve"),
    ("servers:\n - {name: a, model: m, url: 'ftp://x', experts: [{name: x, domain: law}]}\n", "http://"),
    ("servers: [", "not valid YAML"),
])
def test_invalid_files_are_one_line_naming_the_file(tmp_path, text, message):
    with pytest.raises(FleetError, match=message) as info:
        load_fleet(_write(tmp_path, text))
    assert "fleet.yaml" in str(info.value) and "\n" not in str(info.value)


def test_a_busy_port_is_named_with_the_fix(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = _write(tmp_path, f"servers:\n - {{name: a, model: smollm2-135m, port: {port}, "
                                "experts: [{name: x, domain: law}]}\n")
        monkeypatch.setenv("QSEF_HOME", str(tmp_path))
        assert main(["fleet", "up", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use by another program; choose another port" in err
    assert err.count("\n") == 1


def test_remote_servers_are_registered_by_url_and_unregistered_by_down(tmp_path):
    class Models(BaseHTTPRequestHandler):
        def do_GET(self):  # an OpenAI-compatible server that is not vLLM: up, but no live load
            body = b'{"object": "list", "data": []}'
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        m = _manager(tmp_path, f"servers:\n - name: far\n   url: {url}\n   model: qwen-1.5b\n   experts:\n"
                               "    - {name: finance-big, domain: finance, size_params: 1540000000}\n"
                               " - {name: gone, url: 'http://127.0.0.1:9/v1', model: m, experts: [{name: x, domain: law}]}\n")
        rows = {r["server"]: r for r in m.up()}
        spec = m.registry.get("finance-big")
        assert spec.backend == "openai" and spec.backend_kwargs == {"base_url": url, "model": "qwen-1.5b"}
        assert rows["far"]["healthy"] and rows["far"]["load"] is None and rows["far"]["experts"] == ["finance-big"]
        assert not rows["gone"]["healthy"]
        assert sorted(m.down()) == ["finance-big", "x"] and m.registry.names() == []
    finally:
        httpd.shutdown()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.stops_vllm(after_other_stops=True)
def test_fleet_up_serves_a_real_vllm_server_reads_its_load_and_down_stops_it(vllm_server, tmp_path):
    """Runs after the test that stops the session's server, so ``up`` really starts one (it would attach to
    a running one on that port just the same), reads its live load, and ``down`` stops it."""
    import httpx

    from experts.load import parse_vllm_metrics

    m = _manager(tmp_path, f"servers:\n - name: small\n   model: {vllm_server.model}\n   port: {vllm_server.port}\n"
                           "   experts: [{name: law-small, domain: law}]\n", settings=vllm_server.settings)
    row = m.up(timeout=900)[0]
    assert row["healthy"] and row["load"] is not None and row["experts"] == ["law-small"]
    assert m.registry.get("law-small").backend_kwargs["base_url"] == vllm_server.base_url
    page = httpx.get(vllm_server.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    assert parse_vllm_metrics(page) is not None, "this vLLM exports none of the request gauges read"
    assert "vllm:kv_cache_usage_perc" in page or "vllm:gpu_cache_usage_perc" in page
    assert m.down() == ["law-small"] and not vllm_server.healthy()
