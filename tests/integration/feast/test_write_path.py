"""How the hook imports feast and writes to a SQLite online store, against real Feast repos.

- ``import_feast`` (a fresh interpreter each, since feast imports once per process): without
  ``typecheck`` Feast's classes are not instrumented by typeguard, typeguard is left as it was,
  and a materialization writes exactly what the ``feast`` CLI writes.
- SQLite writes: rows are prepared outside the database lock and replayed under a file lock that
  parallel writers queue on, so a writer that waits longer than Feast's 5 s busy timeout still
  succeeds.
- The registry lock is not held while the ``FeatureStore`` is built (and feast imported).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from airflow_mlops_provider.exceptions import FeatureStoreError
from airflow_mlops_provider.hooks.feast import FeastHook
from tests.conftest import REPO_ROOT
from tests.integration.feast.conftest import feast_cli
from tests.support.feast_repo import create_feature_repo, sqlite_online_snapshot

pytestmark = pytest.mark.integration
UTC = timezone.utc
START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)

_IMPORT_PROBE = """
import json
import typeguard
original = typeguard.typechecked
from airflow_mlops_provider.hooks.feast import FeastHook
hook = FeastHook("feast_probe", typecheck={typecheck})
names = hook.list_feature_views()
from feast import FeatureView
out = {{
    "instrumented": "TypeCheckMemo" in FeatureView.__init__.__code__.co_names,
    "typeguard_restored": typeguard.typechecked is original,
    "views": names,
}}
if {materialize}:
    from datetime import datetime, timezone
    results = hook.materialize(
        None, datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 3, tzinfo=timezone.utc)
    )
    out["rows"] = sum(r.rows for r in results)
print(json.dumps(out))
"""


def _probe(repo, *, typecheck: bool, materialize: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(typecheck=typecheck, materialize=materialize)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "AIRFLOW_CONN_FEAST_PROBE": repo.connection_json()},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_without_typecheck_writes_what_the_cli_writes(tmp_path):
    source = create_feature_repo(
        tmp_path / "source", rows=4000, n_views=2, n_entities=300, start=START, end=END
    )
    ours, cli = source.copy_to(tmp_path / "ours"), source.copy_to(tmp_path / "cli")
    for repo in (ours, cli):
        feast_cli(repo.path, "apply")

    fast = _probe(ours, typecheck=False, materialize=True)
    assert fast["instrumented"] is False
    assert fast["typeguard_restored"] is True
    assert fast["views"] == source.feature_views
    assert fast["rows"] > 0

    feast_cli(cli.path, "materialize", START.isoformat(), END.isoformat())
    expected = sqlite_online_snapshot(cli)
    assert all(expected.values())
    assert sqlite_online_snapshot(ours) == expected

    checked = _probe(ours, typecheck=True, materialize=False)
    assert checked["instrumented"] is True
    assert checked["typeguard_restored"] is True


def _hook_for(monkeypatch, repo, **kwargs) -> FeastHook:
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_WRITE", repo.connection_json())
    return FeastHook("feast_write", **kwargs)


def test_a_writer_queues_on_the_lock_past_sqlites_busy_timeout(monkeypatch, tmp_path):
    source = create_feature_repo(
        tmp_path / "source", rows=3000, n_views=1, n_entities=200, start=START, end=END
    )
    ours, cli = source.copy_to(tmp_path / "ours"), source.copy_to(tmp_path / "cli")
    for repo in (ours, cli):
        feast_cli(repo.path, "apply")
    hook = _hook_for(monkeypatch, ours)
    online = hook.store._get_provider().online_store
    db = online._get_db_path(hook.store.config)

    # Another writer: holds the write lock and a SQLite write transaction for 6 s, longer than
    # the 5 s that Feast's SQLite connection waits before "database is locked".
    held = threading.Event()
    released = {}

    def other_writer():
        with open(db + ".write.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(6)
            conn.execute("COMMIT")
            conn.close()
            released["at"] = time.monotonic()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert held.wait(10)
    try:
        (result,) = hook.materialize(None, START, END, online_write_batch_size=500)
    finally:
        thread.join()
    finished = time.monotonic()
    assert finished >= released["at"]
    assert result.rows > 0

    feast_cli(cli.path, "materialize", START.isoformat(), END.isoformat())
    assert sqlite_online_snapshot(ours) == sqlite_online_snapshot(cli)


def test_the_store_is_built_before_the_registry_lock_is_taken(monkeypatch, tmp_path):
    repo = create_feature_repo(tmp_path / "repo", rows=500, n_views=1, n_entities=50, start=START, end=END)
    feast_cli(repo.path, "apply")
    hook = _hook_for(monkeypatch, repo, lock_timeout=0.5)
    lock_path = repo.registry_path.parent / "registry.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(FeatureStoreError, match="registry lock"):
            hook.get_feature_views(None)
        # The slow part (import feast, build the FeatureStore) ran before waiting on the lock.
        assert "store" in hook.__dict__
    assert [v.name for v in hook.get_feature_views(None)] == repo.feature_views
