"""Trigger validation as the UI does it: POST a run's conf to a real `airflow api-server` (REST API v2).

The module starts an api-server on a free loopback port, a scheduler (LocalExecutor) and a
dag-processor, once, and kills their process groups at the end. The SimpleAuthManager runs with
``simple_auth_manager_all_admins`` so requests need no token, as in `airflow standalone`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from airflow_mlops_provider.sweeps import trials_from_random
from tests.conftest import VENV_BIN, airflow_env, free_port
from tests.integration.sweeps.conftest import SWEEP_DAGS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "sweep_random"


class Api:
    """A tiny JSON client for the REST API v2."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_for(self, what: str, probe, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                ok, last = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                ok, last = False, err
            if ok:
                return last
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def airflow_services(airflow_db, tmp_path_factory):
    """An api-server, a scheduler and a dag-processor on the test DB, serving the sweep DAGs."""
    port = free_port()
    logs = tmp_path_factory.mktemp("airflow-services")
    result_dir = tmp_path_factory.mktemp("sweep-results")
    env = airflow_env(
        AIRFLOW__CORE__DAGS_FOLDER=str(SWEEP_DAGS),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
        SWEEP_RESULT_DIR=str(result_dir),
    )
    commands = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
    }
    procs = []
    try:
        for name, args in commands.items():
            out = open(logs / f"{name}.log", "wb")
            procs.append(
                subprocess.Popen(
                    [str(VENV_BIN / "airflow"), *args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        api = Api(f"http://127.0.0.1:{port}/api/v2")

        def dag_loaded():
            for proc, name in zip(procs, commands):
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}")
            status, body = api.call("GET", f"/dags/{DAG_ID}")
            return status == 200, body

        api.wait_for(f"DAG {DAG_ID} to be served", dag_loaded, timeout=240)
        yield api, result_dir, logs
    finally:
        _stop(procs)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"n_trials": 20_000}, "20000 is greater than the maximum of 10000"),
        ({"runtime": "slurm"}, "'slurm' is not one of ['docker', 'kubernetes', 'local']"),
        ({"gpus_per_trial": -1}, "-1 is less than the minimum of 0"),
        ({"mode": "median"}, "'median' is not one of ['min', 'max']"),
        (
            {"search_space": {"lr": {"distribution": "gaussian", "low": 0.1, "high": 1}}},
            "'gaussian' is not one of ['choice', 'float', 'int']",
        ),
        (
            {"search_space": {"lr": {"distribution": "float", "low": 0, "high": 1, "log": True}}},
            "0 is less than or equal to the minimum of 0",
        ),
    ],
    ids=[
        "n-trials-over-max",
        "unknown-runtime",
        "negative-gpus",
        "unknown-mode",
        "unknown-distribution",
        "log-low-zero",
    ],
)
def test_conf_violating_the_schema_is_rejected_with_its_message(airflow_services, conf, message):
    api, _, _ = airflow_services
    status, body = api.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 400, body
    assert message in body["detail"], body


def test_valid_conf_runs_to_success_with_the_conf_search_space(airflow_services):
    api, result_dir, logs = airflow_services
    space = {"alpha": {"low": 0.5, "high": 2.0}, "kind": ["a", "b", "c"]}
    conf = {"search_space": space, "n_trials": 6, "seed": 3, "metric": "score", "mode": "max"}
    status, body = api.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, body
    run_id = body["dag_run_id"]
    assert body["conf"] == conf

    def finished():
        status, run = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        return run.get("state") in ("success", "failed"), run

    run = api.wait_for("the triggered run to finish", finished, timeout=300)
    assert run["state"] == "success", (logs / "scheduler.log").read_text()[-4000:]
    # the run planned its trials from the conf's space, not the DAG default
    status, xcom = api.call(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/plan_sweep/xcomEntries/sweep_trials"
    )
    assert status == 200, xcom
    planned = xcom["value"]
    if isinstance(planned, str):
        planned = json.loads(planned)
    assert planned == trials_from_random(space, 6, 3)
    report = json.loads((result_dir / f"{DAG_ID}.json").read_text())
    assert report["run_id"] == run_id
    assert report["conf_search_space"] == space
    summary = report["summary"]
    assert summary["n_trials"] == 6
    assert summary["metric"] == "score"
    assert summary["mode"] == "max"
    assert (
        summary["best"]["trial_id"]
        == max(summary["leaderboard"], key=lambda r: r["metrics"]["score"])["trial_id"]
    )
