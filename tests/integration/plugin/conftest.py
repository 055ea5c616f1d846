"""
One shared stack for the plugin view modules (sweep, models, features, GPUs), started once.

Each of test_sweep_view.py, test_models_view.py, test_features_view.py and test_gpus_view.py used
to start its own ``mlflow server``, ``airflow dags test`` run(s) and api-server. Here one real
``mlflow server`` serves all of them, each module's data is written once (under its own
connection ids, so no module sees another's), and ONE api-server runs with every setting the
four need. Slow independent steps overlap: the ``mlflow server`` starts while the Features DAG
runs; the api-server starts while the models are registered and the DAGs finish. The two
``airflow dags test`` runs stay one after the other (one SQLite writer at a time).

Data kept distinct on purpose:

- the sweep tracks to ``mlflow_a_sweep`` (``ui_url`` set, no token); the models module reads
  ``mlflow_default`` (with a token, no ``ui_url``) and ``mlflow_down``. Both mlflow connections
  name the same server, so ``/mlops/models`` lists its models twice; ``mlflow_a_sweep`` sorts
  before ``mlflow_default``, whose rows and links come last on the page;
- the Docker-backed GPU data (a labelled container, lease holders) is made by
  test_gpus_view.py's own fixture (it needs the ``base_image`` fixture: skipped without Docker,
  a failure with MLOPS_REQUIRE_DOCKER=1); the api-server only needs the lease dir and the
  ``[mlops] docker_host_gpus`` value, fixed here.
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import airflow_env, free_port, run_airflow
from tests.integration.mlflow.conftest import TOKEN, make_context, metric_run, mlflow_conn_json
from tests.support.airflow_runs import latest_run_id
from tests.support.airflow_services import airflow_services
from tests.support.feast_repo import create_feature_repo
from tests.support.mlflow_server import start_mlflow_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.airflow_services import RestApi
    from tests.support.feast_repo import FeatureRepo
    from tests.support.mlflow_server import MlflowServer

HERE = Path(__file__).parent

# test_sweep_view.py
SWEEP_DAGS = HERE / "sweep_dags"
SWEEP_DAG_ID = "plugin_sweep"
SWEEP_CONN_ID = "mlflow_a_sweep"  # = plan_sweep(mlflow_conn_id=...) in sweep_dags/plugin_sweep.py
SWEEP_UI_URL = "http://mlflow-ui.example:5000"

# test_models_view.py
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_TEXT = "<script>alert(1)</script>"
XSS_ATTR = '"><svg onload=alert(1)>'

# test_features_view.py
FEATURES_DAGS = HERE / "features_dags"
FEATURES_DAG_ID = "mlops_plugin_features"
FEATURES_LOGICAL_DATE = "2024-01-02T00:00:00+00:00"
REDIS_PASSWORD = "feast-view-redis-secret"

# test_gpus_view.py
LOCAL_DOCKER = "unix://var/run/docker.sock"


@dataclass
class PluginStack:
    """What the four modules read: the api-server (signed in as alice), the data each one wrote."""

    api: RestApi
    mlflow: MlflowServer
    sweep_run_id: str
    model_runs: dict[str, str]
    model_experiment_id: str
    mlflow_down_port: int
    feast_repo: FeatureRepo
    features_run_id: str
    gpu_lease_dir: Path
    docker_down: str


def _sweep_conn(url: str) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return json.dumps(
        {"conn_type": "mlflow", "host": host, "port": int(port), "extra": {"ui_url": SWEEP_UI_URL}}
    )


def _register_churn(url: str, experiment: str) -> dict[str, str]:
    """Three versions of ``churn`` through our operators, then two promotion decisions."""
    from airflow_mlops_provider.operators.mlflow import (
        MlflowPromoteModelOperator,
        MlflowRegisterModelOperator,
        MlflowSetAliasOperator,
    )

    runs = {}
    for number, auc in (("1", 0.80), ("2", 0.85), ("3", 0.78)):
        run_id = metric_run(url, experiment=experiment, metrics={"val_auc": auc})
        runs[number] = run_id
        ctx = make_context(task_id="register", run_id=f"manual__{number}", dag_id="train_churn")
        if number == "3":
            ctx["ti"].map_index = 2  # a mapped registration: the link names its map index
        MlflowRegisterModelOperator(
            task_id="register",
            model_name="churn",
            source=f"runs:/{run_id}/model",
            run_id=run_id,
            alias="champion" if number == "1" else None,
        ).execute(ctx)
        if number != "1":
            MlflowPromoteModelOperator(
                task_id="promote", model_name="churn", challenger_version=number, metric="val_auc", mode="max"
            ).execute(make_context(task_id="promote", run_id=f"manual__{number}", dag_id="train_churn"))
    MlflowSetAliasOperator(task_id="prod", model_name="churn", alias="production", version="2").execute(
        make_context(task_id="prod", dag_id="train_churn")
    )
    return runs


def _register_models(url: str) -> tuple[dict[str, str], str]:
    """
    The models module's registry: ``churn`` (our operators), ``bulk`` (120 versions), the XSS model.

    The operators read ``mlflow_default`` from ``AIRFLOW_CONN_MLFLOW_DEFAULT`` (set by the caller).
    """
    from mlflow import MlflowClient

    runs = _register_churn(url, "models-view")
    client = MlflowClient(url)
    experiment_id = client.get_run(runs["1"]).info.experiment_id
    client.create_registered_model("bulk")
    for _ in range(120):
        client.create_model_version(
            "bulk", f"runs:/{runs['1']}/model", run_id=runs["1"], await_creation_for=0
        )
    client.create_registered_model(XSS_NAME, description=XSS_TEXT)
    client.create_model_version(
        XSS_NAME,
        f"runs:/{runs['1']}/model",
        run_id=runs["1"],
        tags={"airflow.dag_id": XSS_ATTR, "airflow.run_id": XSS_TEXT},
    )
    client.set_registered_model_alias(XSS_NAME, "champion", "1")
    return runs, experiment_id


def _feature_repo(tmp: Path) -> FeatureRepo:
    """Three views: ``fv_0`` (TTL: fresh), ``fv_1`` (tag threshold 2h: stale), ``fv_2`` (never)."""
    repo = create_feature_repo(tmp / "repo", n_views=3, rows=600, n_entities=50, project="plugin_view")
    definitions = repo.path / "features.py"
    text = definitions.read_text()
    assert 'name="fv_1",' in text
    definitions.write_text(
        text.replace('name="fv_1",', 'name="fv_1",\n    tags={"mlops.freshness_threshold": "2h"},', 1)
    )
    return repo


@pytest.fixture(scope="package")
def plugin_stack(airflow_db: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginStack]:
    """Start the shared mlflow server, run the DAGs, register the models, serve it all once."""
    tmp = tmp_path_factory.mktemp("plugin-stack")
    repo = _feature_repo(tmp)
    feast_env = {
        "AIRFLOW_CONN_FEAST_PLUGIN": repo.connection_json(),
        "AIRFLOW_CONN_FEAST_BROKEN": json.dumps(
            {
                "conn_type": "feast",
                "password": REDIS_PASSWORD,
                "extra": {"repo_path": str(tmp / "no-such-repo")},
            }
        ),
    }
    features_env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(FEATURES_DAGS), **feast_env)
    # The api-server's DAGs folder: both DAG files (the runs themselves use their own folders).
    dags = tmp / "dags"
    dags.mkdir()
    for source in (SWEEP_DAGS / "plugin_sweep.py", FEATURES_DAGS / "features_view_dags.py"):
        (dags / source.name).symlink_to(source)
    logs = tmp / "logs"
    logs.mkdir()
    lease_dir = tmp / "leases"
    docker_down = f"tcp://127.0.0.1:{free_port()}"
    host_gpus = {LOCAL_DOCKER: {"0": "NVIDIA L4", "1": "NVIDIA L4"}, docker_down: 1}
    down_port = free_port()
    mlflow_down = json.dumps(
        {"conn_type": "mlflow", "host": "127.0.0.1", "port": down_port, "password": TOKEN}
    )
    patch = pytest.MonkeyPatch()
    with contextlib.ExitStack() as stack:
        stack.callback(patch.undo)
        pool = stack.enter_context(ThreadPoolExecutor(2))
        features = pool.submit(
            run_airflow, "dags", "test", FEATURES_DAG_ID, FEATURES_LOGICAL_DATE, env=features_env, timeout=900
        )
        server = start_mlflow_server(tmp / "mlflow", timeout=300)
        stack.callback(server.stop)
        models_conn = mlflow_conn_json(server.url)
        sweep_conn = _sweep_conn(server.url)
        patch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", models_conn)  # for the operators run in-process
        models = pool.submit(_register_models, server.url)
        api = stack.enter_context(
            airflow_services(
                dags,
                logs,
                users="alice:viewer,bob:viewer",
                components=("api-server",),
                AIRFLOW_CONN_MLFLOW_DEFAULT=models_conn,
                AIRFLOW_CONN_MLFLOW_DOWN=mlflow_down,
                AIRFLOW_CONN_MLFLOW_A_SWEEP=sweep_conn,
                AIRFLOW__MLOPS__PLUGIN_BACKEND_TIMEOUT="60",
                AIRFLOW__MLOPS__GPU_LEASE_DIR=str(lease_dir),
                AIRFLOW__MLOPS__DOCKER_HOST_GPUS=json.dumps(host_gpus),
                KUBECONFIG=str(tmp / "no-kubeconfig"),
                **feast_env,
            )
        )
        features.result()
        run_airflow(
            "dags",
            "test",
            SWEEP_DAG_ID,
            env=airflow_env(
                AIRFLOW__CORE__DAGS_FOLDER=str(SWEEP_DAGS), AIRFLOW_CONN_MLFLOW_A_SWEEP=sweep_conn
            ),
            timeout=900,
        )
        runs, experiment_id = models.result()
        yield PluginStack(
            api=api,
            mlflow=server,
            sweep_run_id=latest_run_id(SWEEP_DAG_ID),
            model_runs=runs,
            model_experiment_id=experiment_id,
            mlflow_down_port=down_port,
            feast_repo=repo,
            features_run_id=latest_run_id(FEATURES_DAG_ID),
            gpu_lease_dir=lease_dir,
            docker_down=docker_down,
        )
