"""A real DAG run (``airflow dags test``) of register, promote, branch, alias and sense."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from airflow_mlops_provider.assets.mlflow import mlflow_model_asset
from tests.conftest import dags_test
from tests.integration.mlflow.conftest import TOKEN, log_sklearn_model, metric_run, mlflow_conn_json

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "dags"


def test_registry_dag_end_to_end(airflow_db, mlflow_server, sklearn_model, tmp_path):
    from mlflow import MlflowClient

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    run_a = log_sklearn_model(mlflow_server.url, experiment="airflow-mlops-e2e", metrics={"val_auc": 0.80})
    run_b = metric_run(mlflow_server.url, experiment="airflow-mlops-e2e", metrics={"val_auc": 0.90})
    conf = {"model_name": name, "run_a": run_a.run_id, "run_b": run_b, "model_id": sklearn_model.model_id}
    proc = dags_test(
        "mlflow_registry_e2e",
        DAGS,
        conf=json.dumps(conf),
        extra_env={"AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_conn_json(mlflow_server.url)},
        check=False,
    )
    output = proc.stdout + proc.stderr
    (tmp_path / "dags-test-output.txt").write_text(output)
    assert proc.returncode == 0, output[-6000:]

    client = MlflowClient(mlflow_server.url)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    assert [v.version for v in versions] == ["1", "2"]
    assert versions[0].run_id == run_a.run_id
    assert versions[1].run_id == run_b
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "candidate").version == "2"
    assert versions[1].tags["airflow.promotion.decision"] == "promote"
    assert versions[1].tags["airflow.dag_id"] == "mlflow_registry_e2e"

    home = Path(airflow_db)
    db = sqlite3.connect(home / "airflow.db")
    states = dict(
        db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = 'mlflow_registry_e2e' AND run_id IN "
            "(SELECT run_id FROM dag_run WHERE dag_id = 'mlflow_registry_e2e' AND conf LIKE ?)",
            (f"%{name}%",),
        ).fetchall()
    )
    assert {k: states.get(k) for k in ("deploy", "keep", "wait_champion", "leak_attempt")} == {
        "deploy": "success",
        "keep": "skipped",
        "wait_champion": "success",
        "leak_attempt": "success",
    }, states

    # Asset events on mlflow-model://<name>: two registrations and two alias moves.
    uri = mlflow_model_asset(name).uri
    rows = db.execute(
        "SELECT e.source_task_id, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.uri = ? ORDER BY e.id",
        (uri,),
    ).fetchall()
    events = [(task_id, json.loads(extra)) for task_id, extra in rows]
    assert [(t, e["event"], e["version"]) for t, e in events] == [
        ("register_a", "registered", "1"),
        ("register_b", "registered", "2"),
        ("promote", "promoted", "2"),
        ("tag_candidate", "promoted", "2"),
    ]

    # The token never shows: not in the output, the task logs or the rendered fields.
    # leak_attempt logged the token on purpose and checked that the task's masker hides it.
    seen = [line for line in output.splitlines() if "token seen by the task" in line]
    assert all("token seen by the task: ***" in line for line in seen), seen
    assert TOKEN not in output
    for log in (home / "logs").rglob("*"):
        if log.is_file():
            assert TOKEN not in log.read_text(errors="replace"), log
    rendered = db.execute("SELECT rendered_fields FROM rendered_task_instance_fields").fetchall()
    assert rendered
    assert all(TOKEN not in (r[0] or "") for r in rendered)
    assert any(name in (r[0] or "") for r in rendered)
