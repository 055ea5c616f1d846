"""Container sweeps under a real scheduler (LocalExecutor), api-server and dag-processor, tracked in MLflow.

- Two mapped trial tasks of two containers each really run at the same time.
- Clearing a finished DAG run reruns it: with the default cache key (``{{ run_id }}``) every trial
  is served from MLflow, so no trial run is created and no container starts.
- A trial task killed with SIGKILL mid-trial is retried by Airflow: the retry reattaches to the
  trial's container and logs into the same MLflow run, so exactly one child run is left, and no
  container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_services import airflow_services as start_airflow
from tests.support.airflow_services import serve_dags
from tests.support.docker_events import created_containers
from tests.support.mlflow_server import start_mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

DAGS = Path(__file__).parent / "tracked_dags"
PARALLEL = "parallel_container_sweep"
KILLED = "killed_container_sweep"
TRACKED = "tracked_container_sweep"


@pytest.fixture(scope="module")
def services(airflow_db, docker_engine, tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("scheduled-sweep-mlflow"), timeout=300)
    logs = tmp_path_factory.mktemp("scheduled-sweep-services")
    results = tmp_path_factory.mktemp("scheduled-sweep-results")
    conn = json.dumps({"conn_type": "mlflow", "host": server.url})
    try:
        with start_airflow(
            DAGS,
            logs,
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW_CONN_MLFLOW_DEFAULT=conn,
            SWEEP_RESULT_DIR=str(results),
        ) as api:
            serve_dags(api, PARALLEL, KILLED, TRACKED)
            yield api, server, results
    finally:
        server.stop()


def _trigger(api, dag_id: str) -> str:
    run_id = f"{dag_id}_{time.time_ns()}"
    status, body = api.call("POST", f"/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
    assert status == 200, body
    return run_id


def _wait_run(api, dag_id: str, run_id: str, timeout: float = 400) -> dict[str, Any]:
    def finished():
        status, body = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return status == 200 and body["state"] in ("success", "failed"), body

    return api.wait_for(f"run {run_id} to finish", finished, timeout=timeout)


def _containers(dag_id: str, run_id: str, state: str | None = None) -> list[str]:
    args = ["docker", "ps", "-a", "-q", "--filter", f"label=airflow-mlops.dag_id={dag_id}"]
    args += ["--filter", f"label=airflow-mlops.run_id={run_id}"]
    if state:
        args += ["--filter", f"status={state}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def _children(server, dag_id: str, run_id: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(dag_id)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'", max_results=500
    )
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_mapped_trial_tasks_run_their_containers_in_parallel(services):
    api, server, results = services
    run_id = _trigger(api, PARALLEL)
    body = _wait_run(api, PARALLEL, run_id)
    assert body["state"] == "success", body
    summary = json.loads((results / f"{PARALLEL}.json").read_text())
    records = [r for r in summary["leaderboard"] if r["status"] == "success"]
    assert len(records) == 4
    children = {
        r.data.tags["mlops.trial_id"]: r.data.tags["airflow.map_index"]
        for r in _children(server, PARALLEL, run_id)
    }
    assert sorted(children.values()) == ["0", "0", "1", "1"]
    spans = {r["trial_id"]: (r["metrics"]["started"], r["metrics"]["ended"]) for r in records}
    overlapping = [
        (a, b)
        for a in spans
        for b in spans
        if children[a] != children[b] and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert overlapping, f"no two trials of different mapped tasks ran at the same time: {spans}"
    assert _containers(PARALLEL, run_id) == []


def test_a_killed_trial_task_is_retried_into_the_same_mlflow_run(services):
    api, server, _ = services
    run_id = _trigger(api, KILLED)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _containers(KILLED, run_id, "running"):
        time.sleep(0.5)
    running = _containers(KILLED, run_id, "running")
    assert len(running) == 1, "the trial's container did not start"
    time.sleep(2)  # inside the trial's 25 s sleep
    status, ti = api.call("GET", f"/dags/{KILLED}/dagRuns/{run_id}/taskInstances/train/0")
    assert status == 200, ti
    assert ti["state"] == "running", ti
    assert ti["pid"], ti
    assert ti["try_number"] == 1
    os.kill(ti["pid"], signal.SIGKILL)

    body = _wait_run(api, KILLED, run_id)
    assert body["state"] == "success", body
    status, ti = api.call("GET", f"/dags/{KILLED}/dagRuns/{run_id}/taskInstances/train/0")
    assert ti["try_number"] == 2, ti
    children = _children(server, KILLED, run_id)
    assert len(children) == 1, [(r.info.run_id, r.info.status, r.data.tags) for r in children]
    assert children[0].info.status == "FINISHED"
    assert children[0].data.metrics["loss"] == 1.5
    assert _containers(KILLED, run_id) == []


def _created(dag_id: str, run_id: str, since: float, until: float) -> list[str]:
    return created_containers(
        since, until, **{"airflow-mlops.dag_id": dag_id, "airflow-mlops.run_id": run_id}
    )


def _all_runs(server, dag_id: str, run_id: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(dag_id)
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'", max_results=500
    )


def test_clearing_a_finished_sweep_reruns_it_from_the_cache(services):
    api, server, results = services
    started = time.time()
    run_id = _trigger(api, TRACKED)
    body = _wait_run(api, TRACKED, run_id)
    assert body["state"] == "success", body
    first = json.loads((results / f"{TRACKED}.json").read_text())
    assert len(_created(TRACKED, run_id, started, time.time())) == 6
    runs = _all_runs(server, TRACKED, run_id)
    assert len(runs) == 7  # 1 parent + 6 trials
    assert (
        sorted(r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags)
        == ["FAILED"] * 2 + ["FINISHED"] * 4
    )

    cleared = time.time()
    status, body = api.call("POST", f"/dags/{TRACKED}/dagRuns/{run_id}/clear", {"dry_run": False})
    assert status == 200, body

    def rerun_done():
        status, body = api.call("GET", f"/dags/{TRACKED}/dagRuns/{run_id}")
        done = (
            status == 200
            and body["state"] in ("success", "failed")
            and (results / f"{TRACKED}.json").stat().st_mtime > cleared
        )
        return done, body

    body = api.wait_for(f"cleared run {run_id} to finish", rerun_done, timeout=400)
    assert body["state"] == "success", body
    again = json.loads((results / f"{TRACKED}.json").read_text())
    assert _created(TRACKED, run_id, cleared, time.time()) == []
    assert len(_all_runs(server, TRACKED, run_id)) == 7
    assert again["n_cached"] == 6

    def strip(summary: dict) -> list[tuple]:
        return [
            (r["rank"], r["trial_id"], r["status"], r.get("metrics"), r.get("error"))
            for r in summary["leaderboard"]
        ]

    assert strip(again) == strip(first)
