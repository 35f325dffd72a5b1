import sqlite3
import threading

import pytest

from core.settings import Settings
from experts.backends import make_backend
from experts.registry import (
    MIGRATIONS,
    ExpertExistsError,
    ExpertNotFoundError,
    ExpertRegistry,
    ExpertSpec,
    InvalidExpertError,
    shipped_adapters,
)


@pytest.fixture
def reg(store_target):
    """The registry, once on SQLite and once on PostgreSQL (``store_target``)."""
    return ExpertRegistry(store_target("experts"))


@pytest.fixture
def sqlite_reg(tmp_path):
    """SQLite-only tests: they read or damage the file with sqlite3."""
    return ExpertRegistry(tmp_path / "experts.sqlite")


def test_default_fleet_has_five_domains_sharing_one_model(reg):
    experts = [e for e in reg.ensure_default_fleet() if e.backend == "hf"]
    assert [e.name for e in experts] == ["code", "finance", "general", "law", "medicine"]
    assert {e.backend_kwargs["model"] for e in experts} == {"qwen-0.5b"}
    assert all(e.system_prompt for e in experts)
    n = len(reg.list())
    reg.ensure_default_fleet()  # idempotent
    assert len(reg.list()) == n == 5 + len(shipped_adapters())


def test_shipped_adapters_are_default_experts_with_metrics(reg):
    """Every adapter under experts/data/adapters/ is seeded as <domain>-lora (peft backend) with its
    measured held-out perplexity, its base's on the same windows and the tokens it saw."""
    shipped = shipped_adapters()
    seeded = {e.name: e for e in reg.ensure_default_fleet() if e.backend == "peft"}
    assert sorted(seeded) == sorted(s.name for s in shipped)
    for e in seeded.values():
        assert e.backend_kwargs["adapter"] == f"shipped:{e.domain}" and e.backend_kwargs["base"] == "qwen-0.5b"
        assert {"heldout_ppl", "base_heldout_ppl", "tokens_seen"} <= set(e.metrics)
        assert make_backend(e).adapter[1].is_dir()


def test_metrics_roundtrip_and_migration_adds_the_column(tmp_path):
    reg = ExpertRegistry(tmp_path / "r.sqlite", confine=Settings(home=tmp_path).confine)
    spec = ExpertSpec(name="x-lora", domain="law", backend="peft", backend_kwargs={"adapter": "shipped:law"},
                      metrics={"heldout_ppl": 3.5, "base_heldout_ppl": 5.0, "tokens_seen": 100})
    reg.add(spec)  # a shipped: reference is not a user path, so confine lets it through
    assert reg.get("x-lora").metrics == spec.metrics
    assert reg.schema_version() == len(MIGRATIONS)


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


def test_wal_and_schema_version(sqlite_reg, tmp_path):
    assert sqlite_reg.schema_version() == len(MIGRATIONS)
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


def test_health_and_concurrent_writers(reg, store_target):
    reg.ensure_default_fleet()
    reg.set_health("law", "down", "connection refused")
    assert reg.get("law").health == "down"
    other = ExpertRegistry(store_target("experts"))  # a second worker on the same database

    def add(i):
        (reg if i % 2 else other).add(ExpertSpec(name=f"e{i}", domain="general"))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg.list()) == 13 + len(shipped_adapters())


# -- hardening: every bad value is refused with the field named; damaged rows never break a listing ---------

@pytest.mark.parametrize(("fields", "field"), [
    ({"profile": {"dir": 5}}, "profile.dir"),
    ({"profile": {"texts": [1, 2]}}, "profile.texts"),
    ({"profile": {"texts": "abc"}}, "profile.texts"),
    ({"profile": {"texts": []}}, "profile.texts"),
    ({"domain": "a/b"}, "domain"),
    ({"domain": "../../etc"}, "domain"),
    ({"size_params": 2**63}, "size_params"),
    ({"cost": float("inf")}, "cost"),
    ({"cost": float("nan")}, "cost"),
    ({"backend": "openai", "backend_kwargs": {"base_url": "http://x/v1", "model": "m", "timeout": "abc"}},
     "timeout"),
    ({"backend": "openai", "backend_kwargs": {"base_url": "http://x/v1", "model": "m", "timeout": -1}}, "timeout"),
    ({"backend": "openai", "backend_kwargs": {"base_url": "http://x/v1", "model": "m", "timeout": True}}, "timeout"),
    ({"backend": "openai", "backend_kwargs": {"base_url": "http://x/v1", "model": "m", "retries": 1.5}}, "retries"),
    ({"backend": "openai", "backend_kwargs": {"base_url": "file:///etc", "model": "m"}}, "base_url"),
    ({"backend_kwargs": {"path": 7}}, "path"),
])
def test_bad_values_are_refused_on_add_and_update(reg, fields, field):
    with pytest.raises(ValueError, match=field.split(".")[-1]):
        ExpertSpec(name="bad", **{"domain": "law", **fields})
    reg.ensure_default_fleet()
    changes = {k: v for k, v in fields.items() if k != "backend"}
    if "backend" in fields:
        reg.add(ExpertSpec(name="remote", domain="law", backend="openai",
                           backend_kwargs={"base_url": "http://x/v1", "model": "m"}))
    with pytest.raises(InvalidExpertError, match=field.split(".")[-1]):
        reg.update("remote" if "backend" in fields else "law", **changes)


def _corrupt(path, sql, *args):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(sql, args)
    db.close()


@pytest.mark.parametrize("sql", [
    "UPDATE experts SET backend_kwargs = '{not json' WHERE name = 'law'",
    "UPDATE experts SET profile = '[1, 2' WHERE name = 'law'",
    "UPDATE experts SET profile = '{\"dir\": 5}' WHERE name = 'law'",
    "UPDATE experts SET domain = 'a/b' WHERE name = 'law'",
    "UPDATE experts SET size_params = 'lots' WHERE name = 'law'",
])
def test_a_damaged_row_is_skipped_reported_and_removable(sqlite_reg, tmp_path, sql):
    from experts.registry import DamagedExpertError

    reg = sqlite_reg
    reg.ensure_default_fleet()
    _corrupt(tmp_path / "experts.sqlite", sql)
    assert [e.name for e in reg.list() if e.backend == "hf"] == ["code", "finance", "general", "medicine"]
    assert list(reg.damaged()) == ["law"] and "law" in reg.damaged()["law"]
    with pytest.raises(DamagedExpertError, match="remove the expert"):
        reg.get("law")
    reg.remove("law")
    assert reg.damaged() == {} and len(reg.list()) == 4 + len(shipped_adapters())


def test_user_paths_are_confined_to_the_data_directory(tmp_path):
    from core.settings import Settings

    home = tmp_path / "home"
    settings = Settings(home=home)
    reg = ExpertRegistry(home / "router" / "experts.sqlite", confine=settings.confine)
    for kwargs in ({"backend": "hf", "backend_kwargs": {"path": "/etc"}},
                   {"backend": "hf", "backend_kwargs": {"path": "../../etc"}},
                   {"backend": "qrh", "backend_kwargs": {"checkpoint": "/etc/passwd"}},
                   {"backend": "qrh", "backend_kwargs": {"checkpoint": "student", "tokenizer": "/etc"}},
                   {"profile": {"dir": "/etc"}}):
        with pytest.raises(InvalidExpertError, match="outside the data directory"):
            reg.add(ExpertSpec(name="x", domain="law", **kwargs))
    assert reg.names() == []
    spec = reg.add(ExpertSpec(name="x", domain="law", backend="qrh",
                              backend_kwargs={"checkpoint": "students/law", "tokenizer": "qwen-0.5b"},
                              profile={"dir": "profiles/x"}))
    assert spec.backend_kwargs == {"checkpoint": str(home / "students" / "law"), "tokenizer": "qwen-0.5b"}
    assert reg.get("x").profile["dir"] == str(home / "profiles" / "x")
    with pytest.raises(InvalidExpertError, match="outside the data directory"):
        reg.update("x", profile={"dir": "/etc"})
    assert reg.update("x", cost=2.0).cost == 2.0


def test_an_emptied_registry_is_not_reseeded(store_target):
    reg = ExpertRegistry(store_target("experts"))
    reg.ensure_default_fleet()
    for name in reg.names():
        reg.remove(name)
    again = ExpertRegistry(store_target("experts"))  # a restart
    assert again.ensure_default_fleet() == [] and again.names() == []


def test_an_old_populated_registry_counts_as_seeded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (2)")
    db.executescript(MIGRATIONS[0] + MIGRATIONS[1])
    db.execute("INSERT INTO experts (name, domain, backend, created_at, updated_at) VALUES ('x','law','hf',0,0)")
    db.close()
    reg = ExpertRegistry(path)
    reg.remove("x")
    assert [e.backend for e in reg.ensure_default_fleet()] == ["peft"] * len(shipped_adapters())  # offered once
    for e in reg.list():
        reg.remove(e.name)
    assert reg.ensure_default_fleet() == []


def test_the_change_counter_tells_other_workers(reg, store_target):
    """Add / update / remove through one registry bump the counter another one reads; health does not."""
    other = ExpertRegistry(store_target("experts"))
    v0 = other.version()
    reg.add(ExpertSpec(name="tax", domain="finance"))
    assert other.version() == v0 + 1 and other.get("tax").domain == "finance"
    reg.set_health("tax", "ok")
    assert other.version() == v0 + 1
    reg.update("tax", cost=2.0)
    reg.remove("tax")
    assert other.version() == v0 + 3 and "tax" not in other.names()


def test_concurrent_updates_of_different_fields_keep_both(reg, store_target):
    """update() reads and writes in one transaction with the row locked: no lost update between workers."""
    reg.add(ExpertSpec(name="tax", domain="finance"))
    other = ExpertRegistry(store_target("experts"))
    errors = []

    def bump(r, field, values):
        try:
            for v in values:
                r.update("tax", **{field: v})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a = threading.Thread(target=bump, args=(reg, "cost", [float(i) for i in range(1, 11)]))
    b = threading.Thread(target=bump, args=(other, "description", [f"d{i}" for i in range(1, 11)]))
    a.start(); b.start(); a.join(); b.join()  # noqa: E702
    got = reg.get("tax")
    assert not errors and got.cost == 10.0 and got.description == "d10"


def test_replace_keeps_one_row(reg):
    reg.add(ExpertSpec(name="tax", domain="finance", cost=1.0))
    reg.add(ExpertSpec(name="tax", domain="law", cost=2.0), replace=True)
    assert reg.names() == ["tax"] and reg.get("tax").domain == "law"
