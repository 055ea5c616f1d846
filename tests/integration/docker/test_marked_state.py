"""Marking a running GpuDockerOperator task failed or success through the REST API leaves no container.

Under a real api-server, scheduler (LocalExecutor) and dag-processor, a task runs a 300 s container;
the test marks it failed (or success) with ``PATCH .../taskInstances/train`` as the UI does, and
counts the containers left. Airflow's supervisor answers the state change with SIGTERM and SIGKILLs
the task process 5 s later; an ``on_kill`` that spent the whole 5 s stopping the container was
killed before it removed it (the container stayed, exited, in 2 of 3 tries).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.docker.conftest import task_containers
from tests.support.airflow_services import airflow_services as start_airflow
from tests.support.airflow_services import serve_dags

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

DAG_ID = "mlops_marked_state"
DAGS = Path(__file__).parent / "marked_dags"
#: Each state is marked this many times (one DAG run each).
REPETITIONS = 3


@pytest.fixture(scope="module")
def api(airflow_db, docker_engine, tmp_path_factory):
    logs = tmp_path_factory.mktemp("marked-state-services")
    with start_airflow(DAGS, logs, AIRFLOW__CORE__PARALLELISM="4") as api:
        serve_dags(api, DAG_ID)
        yield api


def _running_container(cli, run_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in task_containers(cli, DAG_ID):
            if item["Labels"].get("airflow-mlops.run_id") == run_id and item["State"] == "running":
                return item
        time.sleep(0.5)
    raise AssertionError(f"no running container for run {run_id} within {timeout}s")


@pytest.mark.parametrize("new_state", ["failed", "success"])
def test_marking_a_running_task_removes_its_container(api, cli, new_state):
    left = []
    for attempt in range(REPETITIONS):
        run_id = f"marked_{new_state}_{attempt}_{time.time_ns()}"
        status, body = api.call(
            "POST", f"/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None}
        )
        assert status == 200, body
        container = _running_container(cli, run_id)
        time.sleep(2)  # the trainer is well inside time.sleep(300)
        status, body = api.call(
            "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train", {"new_state": new_state}
        )
        assert status == 200, body
        # The supervisor notices at its next heartbeat, SIGTERMs, and SIGKILLs 5 s later.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            c["Id"] == container["Id"] for c in task_containers(cli, DAG_ID)
        ):
            time.sleep(1)
        remaining = [c for c in task_containers(cli, DAG_ID) if c["Id"] == container["Id"]]
        left.extend((attempt, c["State"]) for c in remaining)
        for c in remaining:
            cli.remove_container(c["Id"], force=True)
        status, body = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train")
        assert status == 200, body
        assert body["state"] == new_state, body
    assert left == [], f"containers left 60 s after marking the task {new_state}: {left}"
