"""Start, watch and stop a vLLM OpenAI-compatible server on loopback.

The server runs from its own environment (:mod:`router.llm.venv`) in a new process session, with the
flags that work on CPU (float32 — bf16 with eager mode produced wrong text on SmolLM2 — and
``--enforce-eager``, which skips a 4–6 minute compile). A JSON pid file under ``$QSEF_HOME/run``
records pid, port and model so ``qsef llm stop`` / ``status`` work from another process.

Example:
    >>> server = VLLMServer("smollm2-135m", settings=Settings(), port=8011)
    >>> server.start()            # blocks until /health answers (1–3 min on CPU)
    >>> server.base_url
    'http://127.0.0.1:8011/v1'
    >>> server.stop()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from core.settings import Settings
from router.llm.errors import ServerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """What the pid file records about a running server."""

    pid: int
    port: int
    host: str
    model: str
    started: float
    log: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class VLLMServer:
    """One managed vLLM server for one model on one port.

    Args:
        model: a model-store name (pulled on demand) — the server is told to serve it under that name.
        port: loopback port; default ``settings.llm_port``.
        settings: project settings.
        max_model_len: context length to allocate.
        extra_args: more ``api_server`` flags.
    """

    def __init__(
        self,
        model: str,
        *,
        settings: Settings,
        port: int | None = None,
        max_model_len: int = 2048,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.model = model
        self.host = self.settings.llm_host
        self.port = port or self.settings.llm_port
        self.max_model_len = max_model_len
        self.extra_args = extra_args
        self.run_dir = self.settings.path("run")
        self.pid_file = self.run_dir / f"vllm-{self.port}.json"
        self.log_file = self.run_dir / f"vllm-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- state ----------------------------------------------------------------------------------------
    def info(self) -> ServerInfo | None:
        """The recorded server if its process is alive; a stale pid file is removed."""
        try:
            info = ServerInfo(**json.loads(self.pid_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if not _alive(info.pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return info

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://{self.host}:{self.port}/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, object]:
        """A JSON-ready summary: running, healthy, pid, model, port, log path."""
        info = self.info()
        return {
            "running": info is not None,
            "healthy": bool(info) and self.healthy(),
            "pid": info.pid if info else None,
            "model": info.model if info else None,
            "port": self.port,
            "base_url": self.base_url,
            "log": str(self.log_file),
        }

    # -- start / stop ---------------------------------------------------------------------------------
    def command(self, model_dir: Path, python: Path) -> list[str]:
        return [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir),
            "--served-model-name", self.model,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", "float32",
            "--max-model-len", str(self.max_model_len),
            "--enforce-eager",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout: float = 600.0) -> ServerInfo:
        """Start the server (or return the one already running with this model) and wait for health.

        Raises:
            ServerError: the port is taken, another model is served there, the process died, or it
                was not healthy within ``timeout`` (the process is then stopped; the message quotes its log).
        """
        from core.store import ModelStore
        from router.llm.venv import ensure_env

        running = self.info()
        if running is not None:
            if running.model != self.model:
                raise ServerError(f"port {self.port} already serves {running.model!r}; run `qsef llm stop` first")
            self._wait_healthy(running, timeout)
            return running
        if not _port_free(self.host, self.port):
            raise ServerError(f"port {self.port} on {self.host} is in use by another program; pick another with --port")
        python = ensure_env(self.settings)
        model_dir = ModelStore(self.settings).ensure(self.model)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        }
        with open(self.log_file, "wb") as log_handle:
            proc = subprocess.Popen(
                self.command(model_dir, python),
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stop() signals all of its children
            )
        info = ServerInfo(proc.pid, self.port, self.host, self.model, time.time(), str(self.log_file))
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, self.pid_file)
        log.info("vLLM starting", extra={"pid": proc.pid, "model": self.model, "port": self.port})
        try:
            self._wait_healthy(info, timeout, proc=proc)
        except BaseException:
            self.stop()
            raise
        log.info("vLLM healthy", extra={"model": self.model, "seconds": round(time.time() - info.started, 1)})
        return info

    def _wait_healthy(self, info: ServerInfo, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Poll ``/health`` once a second; on a terminal, a bar shows the seconds waited (start-up takes minutes
        on a CPU) and the server log's last line."""
        from core.progress import progress

        deadline = time.monotonic() + timeout
        with progress(total=None, desc=f"vLLM {self.model} starting", unit="s") as bar:
            while time.monotonic() < deadline:
                if self.healthy():
                    return
                exited = proc.poll() is not None if proc is not None else not _alive(info.pid)
                if exited:
                    raise ServerError(f"vLLM exited during start-up; last log lines:\n{self.log_tail()}")
                time.sleep(1.0)
                bar.update(1)
                bar.set_postfix_str(self.log_tail(1)[-60:], refresh=False)
        raise ServerError(f"vLLM was not healthy after {timeout:.0f} s; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, *, grace: float = 30.0) -> bool:
        """SIGTERM the server's process group, SIGKILL after ``grace`` seconds; True if one was running."""
        info = self.info()
        if info is None:
            return False
        try:
            pgid = os.getpgid(info.pid)
        except ProcessLookupError:
            pgid = None
        self._signal(info.pid, pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._group_alive(info.pid, pgid):
            time.sleep(0.3)
        if self._group_alive(info.pid, pgid):
            log.warning("vLLM ignored SIGTERM; killing", extra={"pid": info.pid})
            self._signal(info.pid, pgid, signal.SIGKILL)
            time.sleep(0.5)
        with contextlib.suppress(ChildProcessError):  # reap it if it is our child
            os.waitpid(info.pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal(pid: int, pgid: int | None, sig: signal.Signals) -> None:
        try:
            if pgid is not None and pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _group_alive(pid: int, pgid: int | None) -> bool:
        if _alive(pid):
            return True
        if pgid is None:
            return False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == pgid and _alive(int(entry.name)):
                        return True
                except (ProcessLookupError, PermissionError):
                    continue
        return False
