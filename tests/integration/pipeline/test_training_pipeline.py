"""The example ML workflow end to end, on real components.

``airflow dags test mlops_training_pipeline`` with the Docker runtime (each trial in a real
container of the locally built trainer image), a real ``mlflow server``, and a real Feast repo
(local provider, SQLite online store). Then a real scheduler picks up the model Asset event and
runs ``mlops_deploy_on_new_champion``; a second run with a deliberately worse search space
registers a new version but leaves the champion where it was.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.conftest import REPO_ROOT, dags_test, run_airflow
from tests.support.airflow_services import airflow_services
from tests.support.mlflow_server import start_mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

MODEL = "churn_ci"
TRAINER_IMAGE = "mlops-trainer:latest"
WORSE_CONF = {
    "n_trials": 1,
    "search_space_a": {"C": {"distribution": "float", "low": 1e-7, "high": 2e-7}},
    "search_space_b": {"learning_rate": [0.0001], "max_depth": [1], "max_iter": [1]},
    "rows_per_week": 1000,
}


@pytest.fixture(scope="module")
def trainer_image(base_image):
    # Always run the build: Docker's layer cache makes it quick, and the image follows train.py.
    subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/ci/build_images.sh"), base_image], check=True, timeout=900
    )
    return TRAINER_IMAGE


@pytest.fixture(scope="module")
def pipeline_env(airflow_db, trainer_image, tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    server = start_mlflow_server(work / "mlflow", timeout=300)
    home = work / "example"
    env = {
        "MLOPS_EXAMPLE_HOME": str(home),
        "MLOPS_EXAMPLE_RUNTIME": "docker",
        "MLOPS_EXAMPLE_MODEL_NAME": MODEL,
        "MLOPS_TRAINER_IMAGE": trainer_image,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": server.url}),
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(
            {"conn_type": "feast", "extra": {"repo_path": str(home / "feature_repo")}}
        ),
    }
    # Every example DAG is in the metadata DB before the first run, so the model Asset event
    # queues a run of the deployment DAG that consumes it.
    run_airflow("dags", "reserialize", env={**_env(env)})
    try:
        yield env, server, home, work
    finally:
        server.stop()


def _env(extra):
    from tests.conftest import airflow_env

    return airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"), **extra)


def _client(server):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def _run(env, logical_date, conf=None):
    proc = dags_test(
        "mlops_training_pipeline",
        REPO_ROOT / "dags",
        logical_date=logical_date,
        conf=json.dumps(conf) if conf else None,
        extra_env=env,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "state=success" in out, out[-6000:]
    return out


def test_pipeline_trains_in_containers_registers_and_promotes(pipeline_env):
    env, server, home, _ = pipeline_env
    out = _run(env, "2024-03-04T00:00:00+00:00")
    summary = json.loads((home / "summary.json").read_text())

    assert summary["trials"] >= 6
    assert summary["successful_trials"] == summary["trials"]
    families = {row["params"]["family"] for row in summary["leaderboard"]}
    assert families == {"A", "B"}, summary["leaderboard"]
    assert [row["rank"] for row in summary["leaderboard"]] == list(range(1, summary["trials"] + 1))
    # Each trial ran in its own container: the trainer reports the container's hostname.
    hostnames = {row.get("hostname") for row in summary["leaderboard"]}
    assert socket.gethostname() not in hostnames, hostnames
    assert len(hostnames) == summary["trials"], hostnames
    assert "GpuDockerOperator" in out or "mlops-trainer" in out

    client = _client(server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    production = client.get_model_version_by_alias(MODEL, "production")
    assert summary["promoted"] is True
    assert champion.version == production.version == str(summary["registered_version"])
    assert float(client.get_run(champion.run_id).data.metrics["test_auc"]) == pytest.approx(
        summary["test_auc"]
    )


def test_deploy_dag_runs_when_the_model_asset_fires(pipeline_env):
    env, server, home, work = pipeline_env
    logs = work / "services"
    logs.mkdir(exist_ok=True)
    with airflow_services(REPO_ROOT / "dags", logs, **env) as api:

        def deployed():
            status, body = api.call("GET", "/dags/mlops_deploy_on_new_champion/dagRuns")
            runs = (body or {}).get("dag_runs", []) if status == 200 else []
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return bool(done), runs

        runs = api.wait_for("the asset-triggered deployment run", deployed, timeout=420)
    finished = [r for r in runs if r["state"] in ("success", "failed")]
    assert finished[0]["run_type"] == "asset_triggered", runs
    assert finished[0]["state"] == "success", (logs / "scheduler.log").read_text()[-4000:]
    predictions = list((home / "predictions").glob("v*.parquet"))
    champion = _client(server).get_model_version_by_alias(MODEL, "champion")
    assert [p.name for p in predictions] == [f"v{champion.version}.parquet"]


def test_worse_search_space_does_not_move_the_champion(pipeline_env):
    env, server, home, _ = pipeline_env
    client = _client(server)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    _run(env, "2024-03-11T00:00:00+00:00", conf=WORSE_CONF)
    summary = json.loads((home / "summary.json").read_text())
    assert summary["promoted"] is False
    assert int(summary["registered_version"]) > int(before)
    assert client.get_model_version_by_alias(MODEL, "champion").version == before
    assert client.get_model_version_by_alias(MODEL, "production").version == before
    tags = client.get_model_version(MODEL, str(summary["registered_version"])).tags
    assert any("decision" in key for key in tags), tags
