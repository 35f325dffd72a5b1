"""The ``qsef`` entry point's process-level behaviour (real subprocesses, real graphs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["kg", "stats", "--json", "--domain", "finance"],  # small output: the pipe breaks at the final flush
        ["kg", "export", "--domain", "finance"],  # large output: the pipe breaks inside the handler
    ],
)
def test_closed_pipe_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    """``qsef ... | head`` when ``head`` has exited: no traceback, exit code 141 (128 + SIGPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    env = {**os.environ, "QSEF_HOME": str(tmp_path)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "api.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
