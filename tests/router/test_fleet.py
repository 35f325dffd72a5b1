"""``qsef fleet``: the fleet file is validated before anything starts (unknown model, busy port, duplicates,
an expert asking for a model its server does not serve); remote servers are registered by URL and
unregistered by ``down``; with a real vLLM server, ``up`` attaches to it and ``status`` reads its live load."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api.cli import main
from core.settings import Settings
from experts.registry import ExpertRegistry
from router.fleet import FleetError, FleetManager, load_fleet

ROOT = Path(__file__).resolve().parents[2]


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
    ("servers:\n - {name: a, model: qwen-0.5b, port: 8039, lora: {l: 'shipped:../../core'}, experts: [{name: x, domain: law}]}\n",
     "names no shipped adapter"),
    ("servers:\n - {name: a, model: smollm2-135m, port: 8039, lora: {l: 'shipped:law'}, experts: [{name: x, domain: law}]}\n",
     "was trained on 'qwen-0.5b', not on the server's model 'smollm2-135m'"),
])
def test_bad_entries_are_refused_before_anything_starts(tmp_path, text, message):
    with pytest.raises(FleetError, match=message):
        _manager(tmp_path, text).check()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lora_fleet(tmp_path, port: int, settings=None, adapters=None) -> FleetManager:
    """The shipped multi-LoRA fleet file on ``port`` (optionally only some of its adapters)."""
    import yaml

    data = yaml.safe_load((ROOT / "experts" / "data" / "fleets" / "lora.yaml").read_text())
    server = data["servers"][0]
    server["port"] = port
    if adapters is not None:
        server["lora"] = {k: v for k, v in server["lora"].items() if k in adapters}
        server["experts"] = [e for e in server["experts"] if e["model"] in adapters]
    return _manager(tmp_path, yaml.safe_dump(data), settings=settings)


def test_the_shipped_lora_fleet_serves_every_adapter_from_one_engine(tmp_path):
    """The shipped fleet file validates; vLLM is asked for every adapter by its shipped folder, with room for all
    of them in one batch; its experts get the domain's prompt and description, like the in-process ones."""
    from experts.backends import SHIPPED_ADAPTERS
    from experts.registry import DOMAIN_DESCRIPTIONS, DOMAIN_PROMPTS

    m = _lora_fleet(tmp_path, _free_port())
    m.check()
    s = m.fleet.servers[0]
    cmd = m._server(s).command(tmp_path / "model", tmp_path / "python")
    assert cmd[cmd.index("--max-loras") + 1] == "5" and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    modules = cmd[cmd.index("--lora-modules") + 1:]
    assert modules == [f"{d}-lora={SHIPPED_ADAPTERS / d}" for d in ("code", "finance", "general", "law", "medicine")]
    spec = m._spec(s, s.experts[1])
    assert spec.name == "law-lora-vllm" and spec.backend_kwargs["model"] == "law-lora"
    assert spec.system_prompt == DOMAIN_PROMPTS["law"] and spec.description == DOMAIN_DESCRIPTIONS["law"]
    bare = load_fleet(_write(tmp_path, "servers:\n - {name: a, model: m, port: 8038, "
                                       "experts: [{name: x, domain: law, system_prompt: ''}]}\n"))
    assert m._spec(bare.servers[0], bare.servers[0].experts[0]).system_prompt == ""


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


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.stops_vllm(after_other_stops=True)
def test_vllm_multi_lora_answers_like_the_adapters_in_process(vllm_server, tmp_path):
    """One vLLM engine on Qwen2.5-Coder-0.5B serves two shipped adapters as model names; each fleet expert's
    greedy answer equals the in-process ``peft`` expert's token for token, and differs from the bare base."""
    import httpx

    from experts.backends import ModelPool, make_backend
    from experts.registry import shipped_adapters

    adapters = ("law-lora", "code-lora")
    m = _lora_fleet(tmp_path, vllm_server.port, settings=vllm_server.settings, adapters=adapters)
    question = [{"role": "user", "content": "What is a tort? Answer in one sentence."}]
    vllm_server.stop()  # its port serves SmolLM2 when this test runs alone
    try:
        m.up(timeout=900)
        served = {e["id"] for e in httpx.get(vllm_server.base_url + "/models", timeout=10).json()["data"]}
        assert served == {"qwen-0.5b", *adapters}
        remote = {a: make_backend(m.registry.get(f"{a}-vllm")).generate(question, max_tokens=24) for a in adapters}
        base = make_backend(m.registry.get("law-lora-vllm").model_copy(
            update={"backend_kwargs": {**m.registry.get("law-lora-vllm").backend_kwargs, "model": "qwen-0.5b"}}))
        bare = base.generate(question, max_tokens=24)
    finally:
        m.down()
    pool = ModelPool(vllm_server.settings)
    try:
        local = {s.name: make_backend(s, pool=pool).generate(question, max_tokens=24)
                 for s in shipped_adapters() if s.name in adapters}
    finally:
        pool.close()
    assert remote == local
    assert remote["law-lora"] != bare or remote["code-lora"] != bare
