"""Register two versions and promote the better one, in a real DAG run against a real ``mlflow server``."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.smoke.conftest import run_smoke_dag
from tests.support.mlflow_server import MlflowServer, start_mlflow_server

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.smoke, pytest.mark.integration]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(tmp_path_factory.mktemp("smoke-mlflow"), timeout=300)
    yield started
    started.stop()


def _run_with_model(url: str, val_auc: float) -> str:
    """A run with metric ``val_auc`` and a tiny pyfunc model logged as ``model``; return its id."""
    import mlflow
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [val_auc] * len(model_input)

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        mlflow.set_experiment("airflow-mlops-smoke")
        with mlflow.start_run() as run:
            mlflow.log_metric("val_auc", val_auc)
            mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"])
        return run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)


def test_register_then_promote_the_better_challenger(airflow_db, server, tmp_path):
    from mlflow import MlflowClient

    name = f"smoke-{uuid.uuid4().hex[:8]}"
    run_a = _run_with_model(server.url, 0.80)
    run_b = _run_with_model(server.url, 0.90)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = {"conn_type": "mlflow", "host": host, "port": int(port), "schema": "http"}
    run_smoke_dag(
        "smoke_mlflow",
        tmp_path,
        conf={"model_name": name, "run_a": run_a, "run_b": run_b},
        extra_env={"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(conn)},
    )
    client = MlflowClient(server.url)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    assert [(v.version, v.run_id) for v in versions] == [("1", run_a), ("2", run_b)]
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert versions[1].tags["airflow.promotion.decision"] == "promote"
