"""Expert health checks: weights readable (real files, truncated copies), store models, closed ports."""

import shutil
import socket

import pytest
import torch
from safetensors.torch import save_file

from core.settings import Settings
from experts.backends import HFBackend, ModelPool, OpenAIBackend, QRHBackend, make_backend
from experts.health import check_model_folder, check_safetensors, check_store_model, probe_registry
from experts.registry import ExpertRegistry, ExpertSpec


def _folder(tmp_path):
    d = tmp_path / "model"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "tiny"}')
    save_file({"w": torch.zeros(64, 32), "b": torch.ones(32)}, str(d / "model.safetensors"))
    return d


def test_complete_folder_is_healthy(tmp_path):
    ok, detail = check_model_folder(_folder(tmp_path))
    assert ok, detail
    assert check_safetensors(_folder(tmp_path / "x") / "model.safetensors") == (True, "model.safetensors: 2 tensors")


def test_truncated_or_garbled_weights_are_found(tmp_path):
    d = _folder(tmp_path)
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:-100])
    ok, detail = check_model_folder(d)
    assert not ok and "truncated" in detail
    w.write_bytes(b"\xff" * 64)
    assert not check_model_folder(d)[0]
    w.unlink()
    assert check_model_folder(d) == (False, f"{d} has no weights (*.safetensors or pytorch_model*.bin)")
    (d / "config.json").unlink()
    assert check_model_folder(d) == (False, f"{d} has no config.json")


def test_store_model_checked_without_pulling():
    ok, detail = check_store_model(Settings(), "smollm2-135m")  # cached in the model store
    assert ok, detail
    ok, detail = check_store_model(Settings(), "no-such-model")
    assert not ok and "unknown model" in detail


def test_backends_report_their_state(tmp_path):
    d = _folder(tmp_path)
    assert HFBackend(ExpertSpec(name="a", domain="law", backend_kwargs={"path": str(d)})).health()[0]
    assert HFBackend(ExpertSpec(name="a", domain="law", backend_kwargs={"model": "smollm2-135m"}),
                     pool=ModelPool(Settings())).health()[0]
    qrh = QRHBackend(ExpertSpec(name="q", domain="law", backend="qrh", backend_kwargs={"checkpoint": str(d)}))
    assert qrh.health()[0]
    shutil.rmtree(d)
    assert not qrh.health()[0]


def test_probe_records_health_and_time(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = ExpertRegistry(tmp_path / "experts.sqlite")
    reg.add(ExpertSpec(name="local", domain="law", backend_kwargs={"path": str(_folder(tmp_path))}))
    reg.add(ExpertSpec(name="remote", domain="code", backend="openai",
                       backend_kwargs={"base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}))
    reg.add(ExpertSpec(name="broken", domain="general", backend="openai"))  # no base_url: cannot be built
    pool = ModelPool(Settings())
    results = probe_registry(reg, lambda s: make_backend(s, pool=pool), timeout_s=1.0)
    assert results["local"][0] and not results["remote"][0] and not results["broken"][0]
    assert f"GET http://127.0.0.1:{port}/v1/models" in results["remote"][1]
    assert "base_url" in results["broken"][1]
    by_name = {e.name: e for e in reg.list()}
    assert by_name["local"].health == "ok" and by_name["remote"].health == "down"
    assert all(e.health_at is not None for e in by_name.values())


@pytest.mark.parametrize("timeout", [0.5, 2.0])
def test_openai_health_uses_the_given_timeout(timeout):
    b = OpenAIBackend(ExpertSpec(name="a", domain="law", backend="openai",
                                 backend_kwargs={"base_url": "http://127.0.0.1:9/v1", "model": "m"}))
    ok, detail = b.health(timeout_s=timeout)
    assert not ok and detail.startswith("GET http://127.0.0.1:9/v1/models")
