"""Real processes for the live API tests: a stand-in remote expert server and helpers to start, wait for and
stop a child process group (shared by ``test_live.py`` and ``test_probe.py``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# A minimal OpenAI-compatible server standing in for a remote expert process (model "slow" sleeps).
ECHO = r"""
import sys, time
import uvicorn
from fastapi import FastAPI
app = FastAPI()
name = sys.argv[2]

@app.get("/v1/models")
def models():
    return {"object": "list", "data": []}

@app.post("/v1/chat/completions")
def chat(body: dict):
    if body.get("model") == "slow":
        time.sleep(5)
    q = body["messages"][-1]["content"]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"[{name}:{body.get('model')}] {q}"}}]}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "QSEF_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    proc.log = log
    return proc


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Wait for a 200; the first start may build the default expert profiles from the corpora (minutes)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}: {proc.log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
