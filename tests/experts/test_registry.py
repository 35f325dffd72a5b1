import sqlite3
import threading

import pytest

from experts.registry import (
    MIGRATIONS,
    ExpertExistsError,
    ExpertNotFoundError,
    ExpertRegistry,
    ExpertSpec,
    InvalidExpertError,
)


@pytest.fixture
def reg(tmp_path):
    return ExpertRegistry(tmp_path / "experts.sqlite")


def test_default_fleet_has_five_domains_sharing_one_model(reg):
    experts = reg.ensure_default_fleet()
    assert [e.name for e in experts] == ["code", "finance", "general", "law", "medicine"]
    assert {e.backend_kwargs["model"] for e in experts} == {"qwen-0.5b"}
    assert all(e.system_prompt for e in experts)
    reg.ensure_default_fleet()  # idempotent
    assert len(reg.list()) == 5


def test_add_get_update_remove_roundtrip(reg):
    spec = ExpertSpec(name="tax", domain="Finance", backend="openai",
                      backend_kwargs={"base_url": "http://x/v1", "model": "m"}, profile={"texts": ["vat"]})
    reg.add(spec)
    got = reg.get("tax")
    assert got.domain == "finance" and got.backend_kwargs["model"] == "m" and got.profile == {"texts": ["vat"]}
    with pytest.raises(ExpertExistsError):
        reg.add(spec)
    assert reg.update("tax", cost=3.5, enabled=False).cost == 3.5
    assert reg.list(enabled_only=True) == []
    reg.remove("tax")
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'tax'"):
        reg.get("tax")
    with pytest.raises(ExpertNotFoundError):
        reg.remove("tax")


def test_update_validates(reg):
    reg.ensure_default_fleet()
    with pytest.raises(InvalidExpertError, match="unknown expert fields"):
        reg.update("law", colour="red")
    with pytest.raises(InvalidExpertError):
        reg.update("law", cost=-1)
    with pytest.raises(InvalidExpertError, match="renamed"):
        reg.update("law", name="legal")


def test_bad_names_rejected():
    with pytest.raises(ValueError):
        ExpertSpec(name="Bad Name!", domain="law")


def test_wal_and_schema_version(reg, tmp_path):
    assert reg.schema_version() == len(MIGRATIONS)
    db = sqlite3.connect(tmp_path / "experts.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrates_an_old_database(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO experts (name, domain, backend, created_at, updated_at) VALUES ('x','law','hf',0,0)")
    db.close()
    reg = ExpertRegistry(path)
    assert reg.schema_version() == len(MIGRATIONS)
    assert reg.get("x").health == "unknown"


def test_health_and_concurrent_writers(reg):
    reg.ensure_default_fleet()
    reg.set_health("law", "down", "connection refused")
    assert reg.get("law").health == "down"

    def add(i):
        reg.add(ExpertSpec(name=f"e{i}", domain="general"))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg.list()) == 13
