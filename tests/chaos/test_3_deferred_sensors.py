"""Scenario 3: deferrable sensors survive a killed triggerer.

The MLflow model-version sensor and the Feast freshness sensor of ``chaos_sensors`` defer; once
both wait in the triggerer, its whole process group is SIGKILLed and a new triggerer started.
Then the conditions become true (alias ``champion`` set; ``fv_0`` materialized up to now). Both
tasks must succeed exactly once (first try, one trigger, none left over) within a bounded time:
the new triggerer takes the dead one's triggers after ``triggerer_health_check_threshold``
(10 s in the stack), then each trigger polls every 2 s.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos.conftest import repetitions
from tests.chaos.ledger import LEDGER
from tests.conftest import VENV_BIN
from tests.support.feast_repo import create_feature_repo

if TYPE_CHECKING:
    from tests.chaos.conftest import ChaosServices

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

DAG = "chaos_sensors"
SENSORS = ("wait_model", "wait_features")
#: The bound on condition-true-to-success after a triggerer restart (threshold 10 s + polls + scheduling).
BOUND_S = 120.0


def _fresh_repo(chaos: ChaosServices) -> Any:
    """(Re)create the sensors' Feast repo, never materialized, and ``feast apply`` it."""
    path = chaos.stack.home / "feast" / "sensors"
    shutil.rmtree(path, ignore_errors=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    password = chaos.secrets["Redis password"]
    repo = create_feature_repo(
        path,
        project=f"chaos_sensors_{time.time_ns()}",
        n_views=1,
        rows=200,
        n_entities=20,
        start=now - timedelta(days=1),
        end=now,
        online_store="redis",
        redis_connection_string=f"{chaos.redis_address},password={password}",
    )
    proc = subprocess.run(
        [str(VENV_BIN / "feast"), "apply"], cwd=path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return repo


def _triggers_left(chaos: ChaosServices, run_id: str) -> int:
    import psycopg2

    with psycopg2.connect(chaos.libpq_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s",
            (DAG, run_id),
        )
        return int(cur.fetchone()[0])


def test_sensors_survive_a_killed_triggerer(chaos: ChaosServices) -> None:
    import mlflow
    from feast import FeatureStore

    stack = chaos.stack
    stack.serve(DAG)
    client = mlflow.MlflowClient(tracking_uri=chaos.mlflow_url, registry_uri=chaos.mlflow_url)
    row = LEDGER.row("deferred sensors, triggerer SIGKILLed")
    latencies: list[float] = []
    for attempt in range(repetitions(1)):
        repo = _fresh_repo(chaos)
        model = f"chaos-sensor-{attempt}-{time.time_ns()}"
        client.create_registered_model(model)
        version = client.create_model_version(model, source="s3://chaos-models/sensor-model", run_id=None)
        run_id = stack.trigger(DAG, f"sensors_{attempt}_{time.time_ns()}", {"model": model})
        for task in SENSORS:
            stack.wait_ti(DAG, run_id, task, {"deferred"}, timeout=300)
        captured = chaos.capture_triggers()
        assert {"MlflowModelVersionTrigger", "FeastFeatureFreshnessTrigger"} <= {
            classpath.rsplit(".", 1)[-1] for classpath, _ in captured
        }, captured
        stack.stop("triggerer", signal.SIGKILL)
        time.sleep(2)
        stack.start("triggerer")
        client.set_registered_model_alias(model, "champion", version.version)
        FeatureStore(repo_path=str(repo.path)).materialize(
            repo.start, datetime.now(timezone.utc), feature_views=["fv_0"]
        )
        true_at = time.monotonic()
        done = {task: stack.wait_ti(DAG, run_id, task, timeout=BOUND_S + 120) for task in SENSORS}
        latencies.append(time.monotonic() - true_at)
        row.repetitions += 1
        row.kills += 1
        for task, ti in done.items():
            if ti["state"] != "success" or ti["try_number"] != 1:
                row.double_runs += 1
                row.details.append(f"{run_id}/{task}: {ti['state']} on try {ti['try_number']}")
        left = _triggers_left(chaos, run_id)
        if left:
            row.double_runs += left
            row.details.append(f"{run_id}: {left} trigger(s) left")
        status, xcom = stack.api.call(
            "GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/wait_model/xcomEntries/return_value"
        )
        chaos.responses.append((f"xcom {run_id}/wait_model", xcom))
        assert status == 200, xcom
        assert str(xcom["value"]["version"]) == str(version.version), xcom
    row.details.append(
        "condition true to success after the restart: " + ", ".join(f"{s:.0f} s" for s in latencies)
    )
    assert row.double_runs == 0, row.details
    assert max(latencies) < BOUND_S, latencies
