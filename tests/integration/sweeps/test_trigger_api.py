"""Trigger validation as the UI does it: POST a run's conf to a real `airflow api-server` (REST API v2).

The module starts an api-server on a free loopback port, a scheduler (LocalExecutor) and a
dag-processor, once, and kills their process groups at the end. The SimpleAuthManager runs with
``simple_auth_manager_all_admins`` so requests need no token, as in `airflow standalone`.
"""

from __future__ import annotations

import json

import pytest

from airflow_mlops_provider.sweeps import trials_from_random
from tests.integration.sweeps.conftest import SWEEP_DAGS
from tests.support.airflow_services import airflow_services as start_airflow
from tests.support.airflow_services import serve_dags

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "sweep_random"


@pytest.fixture(scope="module")
def airflow_services(airflow_db, tmp_path_factory):
    """An api-server, a scheduler and a dag-processor on the test DB, serving the sweep DAGs."""
    logs = tmp_path_factory.mktemp("airflow-services")
    result_dir = tmp_path_factory.mktemp("sweep-results")
    with start_airflow(SWEEP_DAGS, logs, SWEEP_RESULT_DIR=str(result_dir)) as api:
        serve_dags(api, DAG_ID)
        yield api, result_dir, logs


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
        (
            {"search_space": {"lr": {"low": 0.1, "high": 1.0, "num": 3, "step": 0.1}}},
            "should not be valid under {'required': ['num', 'step']}",
        ),
    ],
    ids=[
        "n-trials-over-max",
        "unknown-runtime",
        "negative-gpus",
        "unknown-mode",
        "unknown-distribution",
        "log-low-zero",
        "num-and-step",
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
