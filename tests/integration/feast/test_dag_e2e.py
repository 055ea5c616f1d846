"""A real DAG run (``airflow dags test``) against real SQLite-backed Feast repos.

One run materializes the same data interval three ways (one task, fan-out per view, chunked
backfill), each into its own copy of the repo; the `feast` CLI materializes the same window into
a fourth copy. All four online stores must hold the same rows, and the values must be the
latest per entity in the generated data. A second run of the same interval changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest

from tests.conftest import dags_test
from tests.integration.feast.conftest import DAGS, feast_cli
from tests.support.feast_repo import create_feature_repo, sqlite_online_snapshot

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2024-01-02T00:00:00+00:00"
WINDOW = (datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc))


def _registry_intervals(repo, view):
    from feast.infra.registry.file import FileRegistryStore  # noqa: F401 - proves the file parses below
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    proto.ParseFromString(repo.registry_path.read_bytes())
    (fv,) = [fv for fv in proto.feature_views if fv.spec.name == view]
    return [(i.start_time.ToDatetime(), i.end_time.ToDatetime()) for i in fv.meta.materialization_intervals]


def test_dag_run_matches_cli_and_reruns_are_idempotent(airflow_db, tmp_path):
    source = create_feature_repo(tmp_path / "source", rows=3000, n_views=2, n_entities=150)
    repos = {name: source.copy_to(tmp_path / name) for name in ("single", "fanout", "chunked", "cli")}
    env = {f"AIRFLOW_CONN_FEAST_{name.upper()}": repos[name].connection_json() for name in repos}

    proc = dags_test("feast_e2e", DAGS, logical_date=LOGICAL_DATE, extra_env=env)
    out = proc.stdout + proc.stderr
    assert "Feast plan for project mlops_test" in out
    assert "fv_0: " in out
    assert "rows/s" in out

    # The feast CLI, same window, its own copy of the repo.
    feast_cli(repos["cli"].path, "apply")
    feast_cli(repos["cli"].path, "materialize", WINDOW[0].isoformat(), WINDOW[1].isoformat())

    cli = sqlite_online_snapshot(repos["cli"])
    assert cli
    assert all(rows for rows in cli.values())
    for name in ("single", "fanout", "chunked"):
        assert sqlite_online_snapshot(repos[name]) == cli, f"{name} differs from the feast CLI"

    # Expected values, straight from the generated data, for sampled entities.
    from feast import FeatureStore

    from tests.support.feast_repo import online_values

    store = FeatureStore(repo_path=str(repos["single"].path))
    sample = [1, 2, 3, 50, 99, 150]
    got = online_values(store, repos["single"], sample)
    for view in source.feature_views:
        expected = source.expected_latest(view, *WINDOW)
        for feature in ("score", "count"):
            assert got[f"{view}:{feature}"] == [
                expected[e][feature] if e in expected else None for e in sample
            ]

    # The registry recorded the data interval for every view.
    assert (WINDOW[0].replace(tzinfo=None), WINDOW[1].replace(tzinfo=None)) in _registry_intervals(
        repos["single"], "fv_1"
    )

    # Rerun the same data interval: the online stores do not change.
    before = {name: sqlite_online_snapshot(repos[name]) for name in ("single", "fanout", "chunked")}
    dags_test("feast_e2e", DAGS, logical_date=LOGICAL_DATE, extra_env=env)
    for name, snapshot in before.items():
        assert sqlite_online_snapshot(repos[name]) == snapshot, f"rerun changed {name}"
    # The registry still parses after both runs (and names both views).
    conn = sqlite3.connect(repos["single"].online_db_path)
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {
        "mlops_test_fv_0",
        "mlops_test_fv_1",
    }
    conn.close()
    assert json.loads(env["AIRFLOW_CONN_FEAST_SINGLE"])["conn_type"] == "feast"
