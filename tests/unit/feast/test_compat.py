"""The version gates of ``_compat.feast``: open on the installed feast, closed (with one warning) outside.

The fallbacks themselves run against real Feast repos in tests/integration/feast/test_compat_fallbacks.py.
"""

from __future__ import annotations

import logging
import sqlite3
from types import SimpleNamespace

import pytest

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import UnsupportedVersionError
from airflow_mlops_provider._compat import feast as feast_compat
from airflow_mlops_provider.hooks import feast_materialize

GATES = ["TYPEGUARD_GATE", "PROVIDER_GATE", "FILE_REGISTRY_GATE", "SQLITE_GATE"]


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(feast_compat, "_WARNED", set())


def _installed(monkeypatch, feast_version):
    real = _compat.installed_version
    monkeypatch.setattr(
        _compat, "installed_version", lambda dist: feast_version if dist == "feast" else real(dist)
    )


@pytest.mark.parametrize("name", GATES)
def test_each_gate_covers_the_declared_floor_and_the_installed_feast(name):
    gate = getattr(feast_compat, name)
    assert gate.distribution == "feast"
    assert gate.contains("0.50.0")
    assert gate.contains(_compat.installed_version("feast"))
    assert not gate.contains("0.49.1")
    assert not gate.contains("0.68.0")
    assert _compat.version_gate(gate)


@pytest.mark.parametrize("found", ["0.49.0", "0.68.0", "1.0.0"], ids=["older", "next-minor", "major"])
def test_a_closed_gate_warns_once_naming_the_versions(monkeypatch, caplog, fresh_warnings, found):
    _installed(monkeypatch, found)
    with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
        assert feast_compat.gate_open(feast_compat.PROVIDER_GATE, "using the public path") is False
        assert feast_compat.gate_open(feast_compat.PROVIDER_GATE, "using the public path") is False
    messages = [r.getMessage() for r in caplog.records if r.name == feast_compat.__name__]
    assert messages == [
        f"FeatureStore._get_provider() is written for feast >=0.50.0,<0.68.0; installed: {found}; "
        "using the public path"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_an_open_gate_says_nothing(caplog, fresh_warnings):
    with caplog.at_level(logging.DEBUG, logger=feast_compat.__name__):
        assert feast_compat.gate_open(feast_compat.SQLITE_GATE, "unused") is True
    assert caplog.records == []


def test_the_sqlite_internals_refuse_to_run_outside_their_gate(monkeypatch, fresh_warnings, tmp_path):
    _installed(monkeypatch, "0.68.0")
    store = SimpleNamespace(_conn=None, _get_conn=lambda config: sqlite3.connect(":memory:"))
    assert feast_compat.sqlite_recorded_writes_supported() is False
    with pytest.raises(UnsupportedVersionError, match=r"installed: 0\.68\.0; no public fallback exists"):
        feast_compat.sqlite_connection(store, None)
    with pytest.raises(UnsupportedVersionError):
        feast_compat.set_sqlite_connection(store, None)


def test_outside_the_gate_the_database_path_comes_from_the_config(monkeypatch, fresh_warnings, tmp_path):
    _installed(monkeypatch, "0.68.0")

    def private(config):
        raise AssertionError("_get_db_path called outside its gate")

    store = SimpleNamespace(_get_db_path=private)
    relative = SimpleNamespace(online_store=SimpleNamespace(path="data/online.db"), repo_path=tmp_path)
    assert feast_compat.sqlite_db_path(store, relative) == tmp_path / "data" / "online.db"
    absolute = SimpleNamespace(online_store=SimpleNamespace(path="/srv/o.db"), repo_path=tmp_path)
    assert str(feast_compat.sqlite_db_path(store, absolute)) == "/srv/o.db"


def test_a_feast_without_online_write_batch_size_warns_once_and_writes_whole_views(monkeypatch, caplog):
    monkeypatch.setattr(feast_materialize, "_BATCH_SIZE_WARNED", set())
    _installed(monkeypatch, "0.62.0")
    old = SimpleNamespace(materialization_config=None)
    with caplog.at_level(logging.WARNING, logger=feast_materialize.__name__):
        feast_materialize._set_online_write_batch_size(old, 500)
        feast_materialize._set_online_write_batch_size(old, 500)
    assert [r.getMessage() for r in caplog.records] == [
        "online_write_batch_size=500 is ignored: feast 0.62.0 has no "
        "materialization_config.online_write_batch_size (feast >= 0.63.0); "
        "each feature view is written in one batch"
    ]
    current = SimpleNamespace(materialization_config=SimpleNamespace(online_write_batch_size=None))
    feast_materialize._set_online_write_batch_size(current, 500)
    assert current.materialization_config.online_write_batch_size == 500
