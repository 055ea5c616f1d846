"""``FeastHook.is_transient_error``: which errors the freshness trigger retries, made for real where possible."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import FeatureStoreError
from airflow_mlops_provider.file_locks import release_fd, try_lock_fd
from airflow_mlops_provider.hooks.feast import FeastHook, FeastLockTimeoutError
from tests.support.ports import free_port


def _raised(func):
    try:
        func()
    except BaseException as err:
        return err
    raise AssertionError(f"{func} raised nothing")


def lock_timeout(tmp_path, monkeypatch):
    (tmp_path / "feature_store.yaml").write_text("project: p\nregistry: data/registry.db\n")
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEAST_LOCKED",
        json.dumps({"conn_type": "feast", "extra": {"repo_path": str(tmp_path)}}),
    )
    hook = FeastHook("feast_locked", lock_timeout=0.05)
    (tmp_path / "data").mkdir()
    fd = try_lock_fd(tmp_path / "data" / "registry.lock")
    try:

        def take():
            with hook.registry_lock():
                pass

        return _raised(take)
    finally:
        release_fd(fd)


def refused_socket(tmp_path, monkeypatch):
    return _raised(lambda: socket.create_connection(("127.0.0.1", free_port()), timeout=2))


def redis_connection_refused(tmp_path, monkeypatch):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=2, retry=Retry(NoBackoff(), 0))
    return _raised(client.ping)


def redis_timeout(tmp_path, monkeypatch):
    import redis

    return redis.exceptions.TimeoutError("Timeout reading from socket")


def redis_wrong_password(tmp_path, monkeypatch):
    import redis

    return redis.exceptions.AuthenticationError("invalid username-password pair")


def sqlite_locked(tmp_path, monkeypatch):
    path = tmp_path / "online.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (k)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0)
    try:
        return _raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.close()
        holder.close()


def sqlite_no_table(tmp_path, monkeypatch):
    return _raised(lambda: sqlite3.connect(":memory:").execute("SELECT * FROM missing"))


def registry_missing(tmp_path, monkeypatch):
    return _raised(lambda: (tmp_path / "registry.db").read_bytes())


def bad_connection(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEAST_BAD",
        json.dumps({"conn_type": "feast", "extra": {"repo_path": str(tmp_path / "missing")}}),
    )
    return _raised(lambda: FeastHook("feast_bad").raw_config)


def unknown_view(tmp_path, monkeypatch):
    return FeatureStoreError("Unknown feature view(s) 'nope'", feature_view="nope")


def wrapped_connection_error(tmp_path, monkeypatch):
    def materialize():
        try:
            raise redis_connection_refused(tmp_path, monkeypatch)
        except Exception as err:
            raise FeatureStoreError("Materializing feature view 'fv' failed", feature_view="fv") from err

    return _raised(materialize)


@pytest.mark.parametrize(
    ("make", "kind", "transient"),
    [
        pytest.param(lock_timeout, FeastLockTimeoutError, True, id="lock-timeout"),
        pytest.param(refused_socket, ConnectionRefusedError, True, id="refused-socket"),
        pytest.param(redis_connection_refused, "ConnectionError", True, id="redis-connection-refused"),
        pytest.param(redis_timeout, "TimeoutError", True, id="redis-timeout"),
        pytest.param(sqlite_locked, sqlite3.OperationalError, True, id="sqlite-locked"),
        pytest.param(wrapped_connection_error, FeatureStoreError, True, id="wrapped-connection-error"),
        pytest.param(redis_wrong_password, "AuthenticationError", False, id="redis-wrong-password"),
        pytest.param(sqlite_no_table, sqlite3.OperationalError, False, id="sqlite-no-table"),
        pytest.param(registry_missing, FileNotFoundError, False, id="registry-missing"),
        pytest.param(bad_connection, AirflowFailException, False, id="bad-connection"),
        pytest.param(unknown_view, FeatureStoreError, False, id="unknown-view"),
    ],
)
def test_transient_or_not(tmp_path, monkeypatch, make, kind, transient):
    err = make(tmp_path, monkeypatch)
    if isinstance(kind, str):
        assert type(err).__name__ == kind, repr(err)
        assert type(err).__module__.startswith("redis"), repr(err)
    else:
        assert isinstance(err, kind), repr(err)
    assert FeastHook.is_transient_error(err) is transient, repr(err)


def test_the_lock_timeout_names_the_lock(tmp_path, monkeypatch):
    err = lock_timeout(tmp_path, monkeypatch)
    assert str(err) == (
        f"Timed out after 0 s waiting for the Feast registry lock {str(tmp_path / 'data' / 'registry.lock')!r}"
    )
