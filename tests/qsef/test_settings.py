"""Settings: defaults < config file < QSEF_* environment; validation; path confinement."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("QSEF_CONFIG", "QSEF_TORCH_THREADS", "QSEF_LOG_LEVEL", "QSEF_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("QSEF_HOME", str(tmp_path))
    return tmp_path


def test_defaults_and_env_override(clean_env, monkeypatch):
    assert Settings().torch_threads == 1
    monkeypatch.setenv("QSEF_TORCH_THREADS", "2")
    monkeypatch.setenv("QSEF_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert s.torch_threads == 2 and s.log_level == "DEBUG" and s.home == clean_env.resolve()


def test_config_file_in_home_then_env_wins(clean_env, monkeypatch):
    (clean_env / "config.toml").write_text('torch_threads = 3\nport = 9000\n')
    assert Settings().torch_threads == 3 and Settings().port == 9000
    monkeypatch.setenv("QSEF_PORT", "9100")
    assert Settings().port == 9100


def test_yaml_config_via_qsef_config(clean_env, monkeypatch, tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("log_level: WARNING\n")
    monkeypatch.setenv("QSEF_CONFIG", str(cfg))
    assert Settings().log_level == "WARNING"


def test_broken_config_names_the_file(clean_env):
    (clean_env / "config.toml").write_text("torch_threads = = 3\n")
    with pytest.raises(ValueError, match=r"config\.toml"):
        Settings()


def test_missing_explicit_config_is_an_error(clean_env, monkeypatch):
    monkeypatch.setenv("QSEF_CONFIG", "/nonexistent/qsef.toml")
    with pytest.raises(FileNotFoundError, match="QSEF_CONFIG"):
        Settings()


def test_invalid_values_are_rejected(clean_env, monkeypatch):
    monkeypatch.setenv("QSEF_TORCH_THREADS", "0")
    with pytest.raises(ValidationError, match="torch_threads"):
        Settings()


def test_confine_keeps_user_paths_inside_home(clean_env):
    s = Settings()
    assert s.confine("kg/medicine.json") == clean_env.resolve() / "kg" / "medicine.json"
    with pytest.raises(ValueError, match="outside the data directory"):
        s.confine("../../etc/passwd")
    with pytest.raises(ValueError, match="outside the data directory"):
        s.confine("/etc/passwd")
    assert s.confine("medicine.json", under="kg") == clean_env.resolve() / "kg" / "medicine.json"
