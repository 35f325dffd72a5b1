"""core.db: the URL setting, versioned migrations on both backends, and the unavailable database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.db import Database, DatabaseConfigError, DatabaseUnavailableError, check_database_url, redact_url
from core.settings import Settings

STEPS = {"sqlite": ["CREATE TABLE t (a INTEGER)", "ALTER TABLE t ADD COLUMN b TEXT; INSERT INTO t VALUES (1, 'x')"],
         "postgresql": ["CREATE TABLE t (a INTEGER)", "ALTER TABLE t ADD COLUMN b TEXT; INSERT INTO t VALUES (1, 'x')"]}


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u@h/db", "unsupported scheme 'mysql'"),
    ("sqlite:///x.db", "unsupported scheme 'sqlite'"),
    ("postgresql://u@h", "names no database"),
    ("postgresql:///db", "names no host"),
])
def test_bad_urls_name_the_setting_and_the_fix(url, message):
    with pytest.raises(DatabaseConfigError, match=message) as info:
        check_database_url(url)
    assert "QSEF_DATABASE_URL" in str(info.value) and "unset it for the embedded SQLite files" in str(info.value)
    with pytest.raises(ValueError, match="QSEF_DATABASE_URL"):
        Settings(database_url=url)


def test_good_urls_and_redaction():
    assert check_database_url("postgres://u:pw@h:5/db") == "postgresql+psycopg://u:pw@h:5/db"
    assert Settings(database_url="  ").database_url is None
    assert "pw" not in redact_url("postgresql+psycopg://u:pw@h:5/db")


def test_migrations_step_once_and_refuse_a_newer_database(store_target):
    db = Database(store_target("m"))
    assert db.migrate({"sqlite": STEPS["sqlite"][:1], "postgresql": STEPS["postgresql"][:1]}, store="demo") == 1
    assert db.migrate(STEPS, store="demo") == 2
    assert db.migrate(STEPS, store="demo") == 2  # idempotent: nothing applied twice
    with db.transaction() as c:
        assert c.execute(text("SELECT COUNT(*) FROM t")).scalar_one() == 1
    with pytest.raises(RuntimeError, match="demo schema version 2 is newer than this code"):
        db.migrate({"sqlite": STEPS["sqlite"][:1], "postgresql": STEPS["postgresql"][:1]}, store="demo")


def test_a_failed_transaction_writes_nothing(store_target):
    db = Database(store_target("m"))
    db.migrate(STEPS, store="demo")
    with pytest.raises(ZeroDivisionError), db.transaction(write=True) as c:
        c.execute(text("INSERT INTO t VALUES (2, 'y')"))
        raise ZeroDivisionError
    with db.transaction() as c:
        assert c.execute(text("SELECT COUNT(*) FROM t")).scalar_one() == 1


def test_an_unreachable_server_is_database_unavailable():
    from core.pglocal import _free_port

    db = Database(f"postgresql://u:secret@127.0.0.1:{_free_port()}/db")
    with pytest.raises(DatabaseUnavailableError) as info:
        db.check()
    assert "secret" not in str(info.value) and "QSEF_DATABASE_URL=postgresql+psycopg://u:***@127.0.0.1" in str(info.value)
