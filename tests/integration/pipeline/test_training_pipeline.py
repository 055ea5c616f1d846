"""The example ML workflow end to end, on real components.

``airflow dags test mlops_training_pipeline`` with the Docker runtime (each trial in a real
container of the locally built trainer image), a real ``mlflow server``, and a real Feast repo
(local provider, SQLite online store). Every trial is an MLflow child run of the sweep's run.
Then a real scheduler picks up the model Asset event and runs ``mlops_deploy_on_new_champion``;
a second run with a deliberately worse search space registers a new version but leaves the
champion where it was; a rerun of the first week is served from the MLflow trial cache and
starts no container.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import socket
import subprocess
import time

import pytest

from tests.conftest import REPO_ROOT, dags_test, run_airflow
from tests.support.airflow_services import airflow_services
from tests.support.docker_events import created_containers
from tests.support.mlflow_server import start_mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

DAG_ID = "mlops_training_pipeline"
MODEL = "churn_ci"
TRAINER_IMAGE = "mlops-trainer:latest"
FIRST_WEEK = "2024-03-04T00:00:00+00:00"
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


def _trial_runs(client, parent_run_id=None):
    """The sweep's trial runs (children) in the pipeline's experiment, of one parent or all."""
    experiment = client.get_experiment_by_name(DAG_ID)
    assert experiment is not None, "the sweep made no MLflow experiment named after the dag_id"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if parent_run_id is None:
        return children
    return [r for r in children if r.data.tags["mlflow.parentRunId"] == parent_run_id]


def _created_containers(since, until):
    return created_containers(since, until, **{"airflow-mlops.dag_id": DAG_ID})


def _reported(output):
    """What ``make demo`` prints for this output: its TaskReporter fed the ``dags test`` lines."""
    spec = importlib.util.spec_from_file_location("mlops_demo_script", REPO_ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    printed = io.StringIO()
    reporter = demo.TaskReporter(out=printed)
    for line in output.splitlines(keepends=True):
        reporter.feed(line)
    return reporter.finished, printed.getvalue()


def _board(summary):
    return [(r["rank"], r["trial_id"], r["status"], r["metrics"]) for r in summary["leaderboard"]]


def _run(env, logical_date, conf=None):
    proc = dags_test(
        DAG_ID,
        REPO_ROOT / "dags",
        logical_date=logical_date,
        conf=json.dumps(conf) if conf else None,
        extra_env=env,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "state=success" in out, out[-6000:]
    finished = re.search(rf"DagRun Finished: dag_id={DAG_ID}, .*? state=(\w+)", out)
    assert finished, out[-6000:]
    assert finished[1] == "success", out[-6000:]
    return out


def test_pipeline_trains_in_containers_registers_and_promotes(pipeline_env):
    env, server, home, work = pipeline_env
    out = _run(env, FIRST_WEEK)
    summary = json.loads((home / "summary.json").read_text())
    (work / "first_summary.json").write_text(json.dumps(summary))

    assert summary["trials"] >= 6
    assert summary["successful_trials"] == summary["trials"]
    assert summary["cached_trials"] == 0
    families = {row["family"] for row in summary["leaderboard"]}
    assert families == {"A", "B"}, summary["leaderboard"]
    assert {row["hparams"]["family"] for row in summary["leaderboard"]} == {"A", "B"}
    assert [row["rank"] for row in summary["leaderboard"]] == list(range(1, summary["trials"] + 1))
    assert not any(row["cached"] for row in summary["leaderboard"])
    # Each trial ran in its own container: the trainer reports the container's hostname.
    hostnames = {row.get("hostname") for row in summary["leaderboard"]}
    assert socket.gethostname() not in hostnames, hostnames
    assert len(hostnames) == summary["trials"], hostnames
    assert "GpuDockerOperator" in out or "mlops-trainer" in out

    # make demo's progress: one line per finished task instance, as dags test runs them.
    finished, printed = _reported(out)
    states = {(task, index): state for task, index, state, _ in finished}
    assert len(states) == len(finished), finished  # each task instance reported once
    expected = ["extract", "feast_apply", "feast_materialize", "build_training_set", "plan_sweep"]
    expected += ["select_best_trial", "evaluate", "log_model", "register", "promote", "decide", "deploy"]
    assert {task: states.get((task, -1)) for task in expected + ["summary"]} == dict.fromkeys(
        expected + ["summary"], "success"
    ), printed
    assert states[("keep_champion", -1)] == "skipped", printed
    trained = sorted(index for task, index in states if task == "train")
    assert trained, printed
    assert trained == list(range(len(trained))), printed
    assert all(states[("train", i)] == "success" for i in trained), printed
    assert all(
        seconds is not None and seconds >= 0 for task, _, _, seconds in finished if task != "keep_champion"
    )
    assert "train[0]" in printed, printed
    assert "Progress: " in printed, printed

    client = _client(server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    production = client.get_model_version_by_alias(MODEL, "production")
    assert summary["promoted"] is True
    assert champion.version == production.version == str(summary["registered_version"])
    assert float(client.get_run(champion.run_id).data.metrics["test_auc"]) == pytest.approx(
        summary["test_auc"]
    )

    # Every trial is an MLflow run: a child of the sweep's one parent run, with its metrics.
    parent_id = summary["mlflow"]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags["airflow.dag_id"] == DAG_ID
    children = _trial_runs(client, parent_id)
    assert len(children) == summary["trials"] == len(_trial_runs(client))
    by_trial = {run.data.tags["mlops.trial_id"]: run for run in children}
    assert set(by_trial) == {row["trial_id"] for row in summary["leaderboard"]}
    for row in summary["leaderboard"]:
        run = by_trial[row["trial_id"]]
        assert run.info.status == "FINISHED"
        assert row["mlflow_run_id"] == run.info.run_id
        assert run.data.metrics["val_auc"] == pytest.approx(row["metrics"]["val_auc"])
        assert run.data.params["family"] == row["family"]
        assert run.data.tags["airflow.task_id"] == "train"
    # The registered model's run points at the winning trial's run.
    winner = client.get_run(champion.run_id)
    assert winner.data.tags["mlops.trial_run_id"] == by_trial[summary["best_trial"]].info.run_id


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


def test_rerun_of_the_same_week_reuses_every_trial_from_mlflow(pipeline_env):
    env, server, home, work = pipeline_env
    first = json.loads((work / "first_summary.json").read_text())
    client = _client(server)
    trial_runs_before = len(_trial_runs(client))

    since = time.time()
    out = _run(env, FIRST_WEEK)
    created = _created_containers(since, time.time())
    summary = json.loads((home / "summary.json").read_text())
    _, printed = _reported(out)  # the tasks as make demo shows them: what to read when this fails

    # Same data interval, rows, seed and trainer image: the cache key matches, so every trial
    # is served from MLflow when the sweep is planned; no container starts, no trial run is added.
    assert created == [], f"a fully cached rerun started containers {created}\n{printed}"
    assert summary["cached_trials"] == summary["trials"] == first["trials"], printed
    assert all(row["cached"] for row in summary["leaderboard"])
    assert _board(summary) == _board(first)
    assert [row["mlflow_run_id"] for row in summary["leaderboard"]] == [
        row["mlflow_run_id"] for row in first["leaderboard"]
    ]
    assert len(_trial_runs(client)) == trial_runs_before
    assert f"{first['trials']} cached" in out
    assert summary["best_trial"] == first["best_trial"]
    assert summary["test_auc"] == pytest.approx(first["test_auc"])
    assert summary["promoted"] is False  # the same model again does not beat the champion
