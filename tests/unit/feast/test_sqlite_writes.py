"""``_feast_sqlite.write_batch`` on a real SQLite database, with a stand-in for Feast's store.

The stand-in's ``online_write_batch`` has the shape of Feast's: statements issued one by one
inside ``with conn:``. The Feast-backed behaviour is in tests/integration/feast/test_write_path.py.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import pytest

from airflow_mlops_provider.hooks import _feast_sqlite


class FakeOnlineStore:
    def __init__(self, path):
        self.path = str(path)
        self._conn = None

    def _get_db_path(self, config):
        return self.path

    def _get_conn(self, config):
        if not self._conn:
            self._conn = sqlite3.connect(self.path, check_same_thread=False)
            self._conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)")
        return self._conn


UPSERT = "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"


def _rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()
    finally:
        conn.close()


@pytest.fixture
def locks():
    taken = []

    @contextmanager
    def lock(db):
        taken.append(db)
        yield

    lock.taken = taken
    return lock


def test_statements_are_replayed_in_order_in_one_transaction(tmp_path, locks):
    store = FakeOnlineStore(tmp_path / "online.db")
    seen_during_write = []

    def write(config, table, data, progress):
        conn = store._get_conn(config)
        conn.execute("SELECT 1")  # outside the transaction: runs for real
        with conn:
            for key, value in data:
                conn.execute(UPSERT, (key, value))
            seen_during_write.append(_rows(store.path))

    data = [("a", 1), ("b", 2), ("a", 3)]  # a later row for "a" must win, as in Feast's loop
    _feast_sqlite.write_batch(write, store, None, None, data, None, lock=locks)

    assert seen_during_write == [[]]  # nothing reached the database while Feast's loop ran
    assert _rows(store.path) == [("a", 3), ("b", 2)]
    assert locks.taken == [tmp_path / "online.db"]
    assert isinstance(store._conn, sqlite3.Connection)  # the real connection is back


def test_a_failing_write_leaves_the_database_untouched(tmp_path, locks):
    store = FakeOnlineStore(tmp_path / "online.db")

    def write(config, table, data, progress):
        conn = store._get_conn(config)
        with conn:
            conn.execute(UPSERT, ("a", 1))
            raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value"):
        _feast_sqlite.write_batch(write, store, None, None, [], None, lock=locks)
    assert _rows(store.path) == []
    assert locks.taken == []
    assert isinstance(store._conn, sqlite3.Connection)


def test_a_read_inside_the_transaction_runs_feasts_write_as_it_is_under_the_lock(tmp_path, locks):
    store = FakeOnlineStore(tmp_path / "online.db")
    calls = []

    def write(config, table, data, progress):
        conn = store._get_conn(config)
        calls.append(type(conn).__name__)
        with conn:
            (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
            conn.execute(UPSERT, ("n", count + 1))

    _feast_sqlite.write_batch(write, store, None, None, [], None, lock=locks)
    assert calls == ["_RecordingConnection", "Connection"]
    assert _rows(store.path) == [("n", 1)]
    assert locks.taken == [tmp_path / "online.db"]


def test_outside_the_gate_feasts_write_runs_as_it_is_under_the_lock(tmp_path, locks, monkeypatch):
    from airflow_mlops_provider import _compat
    from airflow_mlops_provider._compat import feast as feast_compat

    monkeypatch.setattr(feast_compat, "_WARNED", set())
    monkeypatch.setattr(_compat, "installed_version", lambda dist: "0.68.0")
    store = FakeOnlineStore(tmp_path / "online.db")
    config = type("Config", (), {})()
    # A path only the config knows: the lock must be found from it, not from _get_db_path.
    config.online_store = type("OnlineConfig", (), {"path": "from-config.db"})()
    config.repo_path = tmp_path
    calls = []

    def write(config, table, data, progress):
        conn = store._get_conn(config)
        calls.append(type(conn).__name__)
        with conn:
            for key, value in data:
                conn.execute(UPSERT, (key, value))

    _feast_sqlite.write_batch(write, store, config, None, [("a", 1), ("a", 2)], None, lock=locks)
    assert calls == ["Connection"]  # Feast's own connection: nothing recorded
    assert _rows(store.path) == [("a", 2)]
    assert locks.taken == [tmp_path / "from-config.db"]
