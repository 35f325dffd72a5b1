"""``qsef demo`` end to end, as a newcomer runs it: real models in process (int8), real QSEF, real answers.

The data home is a fresh folder whose models, corpora, graphs and profiles link to the installed ones, so
the demo's registry and feedback files are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings

SHARED = ("models", "engines", "corpora", "kg", "profiles", "cache", "nltk_data", "npm", "experts", "history")


@pytest.mark.slow
def test_demo_routes_its_questions_in_process(tmp_path):
    installed = Settings().home
    home = tmp_path / "home"
    home.mkdir()
    for name in SHARED:
        if (installed / name).exists():
            (home / name).symlink_to(installed / name)
    env = {**os.environ, "QSEF_HOME": str(home), "QSEF_LOG_LEVEL": "WARNING"}
    proc = subprocess.run([sys.executable, "-m", "api.cli", "demo", "--json"], capture_output=True, text=True,
                          env=env, timeout=1200, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any("in process, int8" in ln for ln in lines)  # no vLLM server was started
    results = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert len(results) == 4
    for compound in results[:3]:  # the three two-part questions
        assert len(compound["subtasks"]) >= 2, compound["decomposition_path"]
        assert all(s["expert"] and s["answer"].strip() for s in compound["subtasks"])
    single = results[3]
    assert single["decomposition_path"] == "fast_path" and len(single["subtasks"]) == 1
    assert "australia" in single["answer"].lower()  # on topic (the 0.5B model at int8 names Sydney, wrongly)
    assert (home / "router" / "experts.sqlite").is_file()  # its own registry, not the installed one
