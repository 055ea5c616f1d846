"""One real ``mlflow server`` for the whole MLflow integration area, and real logged models."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.mlflow.proxy import DroppingProxy
from tests.support.mlflow_server import MlflowServer, start_mlflow_server

if TYPE_CHECKING:
    from collections.abc import Iterator

TOKEN = "mlflow-test-token-7f3a9c1e5b"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    external = os.environ.get("MLOPS_TEST_MLFLOW_URL")  # a server you already run (local iteration)
    if external:
        port = int(external.rsplit(":", 1)[1])
        workdir = tmp_path_factory.mktemp("mlflow-external")
        yield MlflowServer(external, None, port, "", workdir, workdir)  # type: ignore[arg-type]
        return
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), timeout=300)
    yield server
    server.stop()


@dataclass
class LoggedModel:
    run_id: str
    model_id: str
    artifact_path: str
    source: str


def log_sklearn_model(tracking_uri: str, *, experiment: str, metrics: dict[str, float]) -> LoggedModel:
    """Train a tiny scikit-learn model and log it (and ``metrics``) with MLflow's real APIs."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return LoggedModel(
        run_id=run.info.run_id, model_id=info.model_id, artifact_path="model", source=info.model_uri
    )


def metric_run(tracking_uri: str, *, experiment: str, metrics: dict[str, float]) -> str:
    """A run that only carries metrics (cheap), to pair with an already logged model."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="session")
def sklearn_model(mlflow_server: MlflowServer) -> LoggedModel:
    return log_sklearn_model(mlflow_server.url, experiment="airflow-mlops-tests", metrics={"val_auc": 0.8})


@pytest.fixture
def proxy(mlflow_server: MlflowServer) -> Iterator[DroppingProxy]:
    p = DroppingProxy(upstream_port=mlflow_server.port).start()
    yield p
    p.stop()


def mlflow_conn_json(url: str, *, token: str | None = TOKEN) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn: dict[str, Any] = {"conn_type": "mlflow", "host": host, "port": int(port), "schema": "http"}
    if token:
        conn["password"] = token
    return json.dumps(conn)


@pytest.fixture
def mlflow_conn(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer) -> str:
    """``mlflow_default`` pointing at the real server (through AIRFLOW_CONN_MLFLOW_DEFAULT)."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_conn_json(mlflow_server.url))
    return "mlflow_default"


class FakeTI:
    """The part of a RuntimeTaskInstance the registry operators use."""

    def __init__(
        self, dag_id: str, task_id: str, run_id: str, map_index: int = -1, try_number: int = 1
    ) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = dag_id, task_id, run_id, map_index
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def make_context(
    task_id: str = "register", run_id: str = "manual__1", dag_id: str = "it_mlflow", try_number: int = 1
) -> dict[str, Any]:
    """A task context for calling ``execute`` in-process (real outlet-event accessors)."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    ti = FakeTI(dag_id, task_id, run_id, try_number=try_number)
    return {"ti": ti, "outlet_events": OutletEventAccessors()}
