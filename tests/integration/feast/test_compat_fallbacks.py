"""Each ``_compat.feast`` gate forced closed: the hook takes Feast's public path, warns once, and the
online store still equals the one ``feast materialize`` writes (real repos, real SQLite).

A gate is closed either by giving it an empty range (one gate at a time) or by pretending the
installed feast is 0.68.0 (every gate at once, as after an upgrade the gates were not written for).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import feast as feast_compat
from airflow_mlops_provider.file_locks import release_fd, try_lock_fd
from airflow_mlops_provider.hooks import _feast_sqlite
from airflow_mlops_provider.hooks.feast import FeastHook
from tests.conftest import REPO_ROOT
from tests.integration.feast.conftest import feast_cli
from tests.support.feast_repo import create_feature_repo, sqlite_online_snapshot

pytestmark = pytest.mark.integration
UTC = timezone.utc
START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A repo and what the ``feast`` CLI writes for it: ``(repo, online snapshot)``."""
    base = tmp_path_factory.mktemp("compat")
    repo = create_feature_repo(base / "source", rows=3000, n_views=2, n_entities=200, start=START, end=END)
    cli = repo.copy_to(base / "cli")
    feast_cli(cli.path, "apply")
    feast_cli(cli.path, "materialize", START.isoformat(), END.isoformat())
    expected = sqlite_online_snapshot(cli)
    assert all(expected.values())
    return repo, expected


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(feast_compat, "_WARNED", set())


def _close(monkeypatch, name: str) -> None:
    gate = getattr(feast_compat, name)
    monkeypatch.setattr(feast_compat, name, gate._replace(below=gate.lowest))


def _pretend_feast(monkeypatch, found: str) -> None:
    real = _compat.installed_version
    monkeypatch.setattr(_compat, "installed_version", lambda dist: found if dist == "feast" else real(dist))


def _hook(monkeypatch, repo) -> FeastHook:
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_COMPAT", repo.connection_json())
    return FeastHook("feast_compat")


def _repo_with_gate_closed(monkeypatch, tmp_path, source, gate: str):
    """A copy of the source repo, its hook, and the CLI's snapshot, with ``gate`` closed."""
    repo, expected = source
    ours = repo.copy_to(tmp_path / "ours")
    if gate == "all":
        _pretend_feast(monkeypatch, "0.68.0")
    else:
        _close(monkeypatch, gate)
    return ours, expected, _hook(monkeypatch, ours)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == feast_compat.__name__]


def _materialize_twice(hook: FeastHook) -> None:
    if not hook.registry_file_exists():
        hook.apply()
    for _ in range(2):  # the second run rewrites the same rows and warns no more
        results = hook.materialize(None, START, END, online_write_batch_size=500)
        assert [r.rows > 0 for r in results] == [True, True]


def test_provider_gate_closed_uses_the_public_get_provider(
    monkeypatch, tmp_path, source, caplog, fresh_warnings
):
    import feast.infra.provider
    from feast import FeatureStore

    ours, expected, hook = _repo_with_gate_closed(monkeypatch, tmp_path, source, "PROVIDER_GATE")
    hook.apply()  # Feast's own apply calls _get_provider itself

    def private(self):
        raise AssertionError("FeatureStore._get_provider called outside its gate")

    built = []
    public = feast.infra.provider.get_provider

    def recorded(config):
        built.append(public(config))
        return built[-1]

    monkeypatch.setattr(FeatureStore, "_get_provider", private)
    monkeypatch.setattr(feast.infra.provider, "get_provider", recorded)
    with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
        _materialize_twice(hook)
    assert len(built) == 2  # one provider per materialize call
    assert sqlite_online_snapshot(ours) == expected
    assert _warnings(caplog) == [
        "FeatureStore._get_provider() is written for feast >=0.50.0,<0.50.0; installed: "
        f"{_compat.installed_version('feast')}; building a second provider with "
        "feast.infra.provider.get_provider"
    ]


def test_file_registry_gate_closed_keeps_feasts_own_registry_write(
    monkeypatch, tmp_path, source, caplog, fresh_warnings
):
    ours, expected, hook = _repo_with_gate_closed(monkeypatch, tmp_path, source, "FILE_REGISTRY_GATE")
    with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
        _materialize_twice(hook)
    registry_store = hook.store.registry._registry_store
    assert "_write_registry" not in vars(registry_store)  # Feast's method, not our atomic one
    assert sqlite_online_snapshot(ours) == expected
    fresh = FeastHook("feast_compat")
    assert [len(v.materialization_intervals) for v in fresh.get_feature_views(None)] == [2, 2]
    (warning,) = _warnings(caplog)
    assert warning.endswith("; the file registry is rewritten in place by Feast (not atomically)")


def test_sqlite_gate_closed_writes_with_feast_under_the_lock(
    monkeypatch, tmp_path, source, caplog, fresh_warnings
):
    ours, expected, hook = _repo_with_gate_closed(monkeypatch, tmp_path, source, "SQLITE_GATE")

    def no_recording(conn):
        raise AssertionError("a SQLite batch was recorded outside the gate")

    monkeypatch.setattr(_feast_sqlite, "_RecordingConnection", no_recording)
    hook.apply()
    # Another writer holds the write lock for a second: ours queues behind it.
    fd = try_lock_fd(ours.online_db_path.with_name("online.db.write.lock"))
    assert fd is not None
    released = {}

    def release_later():
        time.sleep(1.0)
        released["at"] = time.monotonic()
        release_fd(fd)

    thread = threading.Thread(target=release_later)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
            _materialize_twice(hook)
    finally:
        thread.join()
    assert time.monotonic() >= released["at"]
    assert sqlite_online_snapshot(ours) == expected
    (warning,) = _warnings(caplog)
    assert warning.startswith("SqliteOnlineStore._conn, _get_conn, _get_db_path and online_write_batch")


def test_every_gate_closed_on_a_newer_feast(monkeypatch, tmp_path, source, caplog, fresh_warnings):
    ours, expected, hook = _repo_with_gate_closed(monkeypatch, tmp_path, source, "all")
    with caplog.at_level(logging.WARNING, logger=feast_compat.__name__):
        _materialize_twice(hook)
    assert sqlite_online_snapshot(ours) == expected
    warnings = _warnings(caplog)
    assert len(warnings) == 3, warnings  # provider, registry, SQLite (feast was imported before)
    assert all("is written for feast >=0.50.0,<0.68.0; installed: 0.68.0; " in w for w in warnings)


_IMPORT_PROBE = """
import json, logging
import typeguard
from airflow_mlops_provider import _compat
real = _compat.installed_version
_compat.installed_version = lambda dist: "0.68.0" if dist == "feast" else real(dist)
seen = []
handler = logging.Handler()
handler.emit = lambda record: seen.append(record.getMessage())
logging.getLogger("airflow_mlops_provider._compat.feast").addHandler(handler)
original = typeguard.typechecked
from airflow_mlops_provider.hooks.feast import FeastHook
from datetime import datetime, timezone
hook = FeastHook("feast_probe")
hook.apply()
results = hook.materialize(
    None, datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 3, tzinfo=timezone.utc)
)
from feast import FeatureView
print(json.dumps({
    "instrumented": "TypeCheckMemo" in FeatureView.__init__.__code__.co_names,
    "typeguard_restored": typeguard.typechecked is original,
    "rows": sum(r.rows for r in results),
    "warnings": seen,
}))
"""


def test_typeguard_gate_closed_imports_feast_plainly(tmp_path, source):
    repo, expected = source
    ours = repo.copy_to(tmp_path / "ours")
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "AIRFLOW_CONN_FEAST_PROBE": ours.connection_json()},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["instrumented"] is True  # typeguard left alone: a plain import feast
    assert out["typeguard_restored"] is True
    assert out["rows"] > 0
    assert out["warnings"][0] == (
        "Importing feast with typeguard's @typechecked turned off is written for feast >=0.50.0,<0.68.0; "
        "installed: 0.68.0; importing feast with typeguard's instrumentation (about 2.7 s more)"
    )
    assert len(out["warnings"]) == 4
    assert sqlite_online_snapshot(ours) == expected
