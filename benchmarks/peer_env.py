"""Peers (semantic-router, TRL, ...) run in their own virtual environment, never in ours: their pins must not move
ours, and nothing they pull may replace the CPU torch build.

    from benchmarks.peer_env import peer_python
    py = peer_python(settings, "semantic-router", ["semantic-router==1.1.1"])   # created once, then reused
    subprocess.run([str(py), "benchmarks/peers/semantic_router_run.py", ...])
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from core.settings import Settings


def peer_python(settings: Settings, name: str, requirements: list[str], *, inherit: bool = False) -> Path:
    """The interpreter of the peer environment ``$QSEF_HOME/envs/peer-<name>-<hash of requirements>``,
    created with uv (pip as the fallback) on first use; an interrupted build is redone, not reused.

    ``inherit``: the peer runs on *our* torch, transformers and peft (the same student and teacher code, and
    no second torch to download): a ``.pth`` file puts our site-packages after the peer's own, and
    ``requirements`` are installed without their dependencies, so list every package the peer needs that
    we do not have (each pinned)."""
    tag = hashlib.sha256("\n".join(sorted(requirements) + ["inherit"] * inherit).encode()).hexdigest()[:10]
    env = settings.path("envs") / f"peer-{name}-{tag}"
    python, stamp = env / "bin" / "python", env / ".complete"
    if stamp.is_file() and python.is_file():
        return python
    shutil.rmtree(env, ignore_errors=True)
    uv = Path(sys.executable).with_name("uv")
    print(f"creating the {name} peer environment in {env} ({', '.join(requirements)})", file=sys.stderr, flush=True)
    no_deps = ["--no-deps"] if inherit else []
    if uv.is_file():
        subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(env)], check=True)
        subprocess.run([str(uv), "pip", "install", "-q", *no_deps, "--python", str(python), *requirements], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *no_deps, *requirements], check=True)
    if inherit:
        import sysconfig

        ours = sysconfig.get_paths()["purelib"]
        theirs = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
        (Path(theirs) / "zz_qsef_inherit.pth").write_text(ours + "\n")
    stamp.write_text("\n".join(requirements) + "\n")
    return python
