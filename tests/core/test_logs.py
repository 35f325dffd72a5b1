"""Console logging: our INFO lines show, third-party libraries' chatter below WARNING does not."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from core.logs import setup_logging

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_library_records_below_warning_are_dropped(capsys) -> None:
    setup_logging("INFO")
    logging.getLogger("bm25s").setLevel(logging.DEBUG)  # what bm25s does to itself at import
    logging.getLogger("bm25s").debug("bm25s debug line")
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    logging.getLogger("faiss.loader").warning("faiss warning")
    logging.getLogger("qsef.profiles").info("our info line")
    logging.getLogger("qsef.profiles").debug("our debug line")
    err = capsys.readouterr().err
    assert "our info line" in err and "faiss warning" in err
    assert "bm25s debug line" not in err and "Loading faiss" not in err and "our debug line" not in err


def test_debug_level_shows_everything(capsys) -> None:
    setup_logging("DEBUG")
    logging.getLogger("bm25s").debug("bm25s debug line")
    logging.getLogger("kg.storage").debug("our debug line")
    err = capsys.readouterr().err
    assert "bm25s debug line" in err and "our debug line" in err


def test_real_bm25s_and_faiss_stay_quiet() -> None:
    """A fresh process importing and using the real libraries after ``setup_logging('INFO')``."""
    code = (
        "from core.logs import setup_logging\n"
        "setup_logging('INFO')\n"
        "import numpy as np\n"
        "from qsef.profiles import LexicalIndex, prototypes\n"
        "LexicalIndex.build(['the tenant pays rent', 'the court rules on appeal', 'a lease ends'])\n"
        "prototypes(np.random.default_rng(0).normal(size=(200, 8)).astype('float32'), k=4)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_loading_a_real_model_draws_no_library_progress_bar() -> None:
    """transformers 5 draws a "Loading weights" bar for every checkpoint; after ``setup_logging('INFO')`` a fresh
    process loading the real encoder (the first thing ``qsef score`` does) prints nothing to stderr."""
    code = (
        "import os\n"
        "os.environ.pop('HF_HUB_DISABLE_PROGRESS_BARS', None)\n"
        "from core.logs import setup_logging\n"
        "setup_logging('INFO')\n"
        "from core.settings import Settings\n"
        "from qsef.encoder import Encoder\n"
        "print(Encoder(settings=Settings()).encode(['a tenant pays rent']).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Loading weights" not in out.stderr and out.stderr == ""
