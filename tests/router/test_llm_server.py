"""The real vLLM server: start, JSON-schema-constrained chat, stop, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.http import OpenAICompatClient
from core.settings import Settings
from router.llm.errors import LLMUnavailable, ServerError
from router.llm.server import VLLMServer, _alive

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

SCHEMA = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "subtask": {"type": "string"},
                    "domain": {"enum": ["medicine", "law", "code", "finance", "general"]},
                },
                "required": ["subtask", "domain"],
            },
        }
    },
    "required": ["subtasks"],
}


def test_json_schema_constrained_completion_is_valid_json(vllm_server):
    client = OpenAICompatClient(vllm_server.base_url, vllm_server.model, timeout=300)
    text = client.chat(
        [{"role": "user", "content": "Split into sub-tasks: What is aspirin used for, and how do I reverse a list in Python?"}],
        json_schema=SCHEMA,
        max_tokens=120,
    )
    data = json.loads(text)  # constrained decoding: must parse
    assert isinstance(data["subtasks"], list) and data["subtasks"]
    for item in data["subtasks"]:
        assert item["domain"] in {"medicine", "law", "code", "finance", "general"}
        assert isinstance(item["subtask"], str)


def test_status_reports_running_server(vllm_server):
    status = vllm_server.status()
    assert status["running"] and status["healthy"] and status["model"] == vllm_server.model


def test_second_start_with_other_model_is_refused(vllm_server):
    other = VLLMServer("qwen-0.5b", settings=Settings(), port=vllm_server.port)
    with pytest.raises(ServerError, match="already serves"):
        other.start(timeout=5)


@pytest.mark.stops_vllm
def test_stop_leaves_no_process_behind(vllm_server):
    """Stop the session's server and check its whole process group is gone (sorted to run last)."""
    info = vllm_server.info()
    assert info is not None
    pgid = os.getpgid(info.pid)
    assert vllm_server.stop() is True
    members = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    leftover = [pid for pid in members if _alive(int(pid))]  # zombies awaiting their reaper are gone already
    assert leftover == [], f"processes left running in the server's group: {leftover}"
    assert not _alive(info.pid)
    assert vllm_server.status()["running"] is False
    client = OpenAICompatClient(vllm_server.base_url, vllm_server.model, timeout=2, retries=1, backoff=0.05)
    with pytest.raises(LLMUnavailable):
        client.chat([{"role": "user", "content": "hi"}])


def test_cli_status_and_stop_from_another_process(vllm_server):
    env = {**os.environ}
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "llm", "status", "--port", str(vllm_server.port)],
        capture_output=True, text=True, env=env, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["healthy"] is True


def test_port_taken_by_another_program_is_a_clear_error(tmp_path):
    import socket

    from core.settings import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = VLLMServer("smollm2-135m", port=port, settings=Settings(home=tmp_path))
        with pytest.raises(ServerError, match="in use"):
            server.start(timeout=5)
