"""The process file of docs/deployment.md, run for real: ``honcho -f deploy/Procfile start`` on PostgreSQL
brings up two router workers on the given port; stopping honcho stops every process it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_procfile_runs_two_router_workers(pg_cluster, tmp_path):
    honcho = shutil.which("honcho") or str(Path(sys.executable).parent / "honcho")
    assert Path(honcho).exists(), "honcho is a dev dependency (pyproject [dev]); run `make setup`"
    port = free_port()
    env = {**os.environ, "QSEF_DATABASE_URL": pg_cluster.create_database("deploy"), "PORT": str(port),
           "QSEF_WORKERS": "2", "QSEF_ROUTER_BACKEND": "none", "QSEF_API_KEY": "k", "QSEF_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    log = tmp_path / "honcho.log"
    proc = subprocess.Popen([honcho, "-f", str(ROOT / "deploy" / "Procfile"), "-d", str(ROOT), "start"],
                            env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, timeout=600)
        pids = set()
        deadline = time.time() + 300
        while len(pids) < 2 and time.time() < deadline:
            with httpx.Client(timeout=60) as c:
                pids.add(c.get(url + "/health").headers["x-qsef-worker"])
        assert len(pids) == 2, pids
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C or a supervisor's stop does
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=2)
