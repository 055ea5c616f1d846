"""Issue 16, item 5: with the demo's MLflow connection, both extra links resolve.

The demo's store is ``sqlite:`` (no UI of its own); its connection names the ``mlflow ui`` the
demo tells the user to start as ``ui_url``. A real ``airflow dags test`` run registers a version
with that connection; Airflow stores each extra link's URL as the ``_link_<class>`` XCom the UI
reads, and both must point at the right run and version there.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, dags_test
from tests.integration.mlflow.conftest import metric_run

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "demo_dags"


def _demo_script():
    spec = importlib.util.spec_from_file_location(
        "mlops_demo_script_links", REPO_ROOT / "scripts" / "demo.py"
    )
    assert spec
    assert spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_connection_makes_both_mlflow_links_resolve(airflow_db, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    demo = _demo_script()
    assert demo.MLFLOW_UI_URL == "http://localhost:5000"
    monkeypatch.chdir(tmp_path)  # the sqlite store's local artifacts land here
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    connections = demo.demo_connections(tracking_uri, tmp_path)
    mlflow_conn = json.loads(connections["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert mlflow_conn["extra"] == {"tracking_uri": tracking_uri, "ui_url": "http://localhost:5000"}

    run_id = metric_run(tracking_uri, experiment="demo-links", metrics={"val_auc": 0.8})
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    name = f"demo links {uuid.uuid4().hex[:6]}"  # a space: the version link quotes the name
    proc = dags_test(
        "mlflow_demo_links",
        DAGS,
        conf=json.dumps({"model_name": name, "run_id": run_id}),
        extra_env=connections,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    db = sqlite3.connect(Path(airflow_db) / "airflow.db")
    rows = db.execute(
        "SELECT x.key, x.value FROM xcom x JOIN dag_run r ON r.id = x.dag_run_id "
        "WHERE x.dag_id = 'mlflow_demo_links' AND x.task_id = 'register' AND r.conf LIKE ? "
        "AND x.key LIKE '\\_link\\_%' ESCAPE '\\'",
        (f"%{name}%",),
    ).fetchall()
    links = {key: json.loads(value) for key, value in rows}
    quoted = name.replace(" ", "%20")
    assert links == {
        "_link_MlflowRunLink": f"http://localhost:5000/#/experiments/{experiment_id}/runs/{run_id}",
        "_link_MlflowModelVersionLink": f"http://localhost:5000/#/models/{quoted}/versions/1",
    }
    versions = MlflowClient(tracking_uri).search_model_versions(f"name = '{name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)]
