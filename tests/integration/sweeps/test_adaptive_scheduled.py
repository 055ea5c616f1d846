"""Adaptive sweeps under a real scheduler (LocalExecutor), api-server and dag-processor, tracked in MLflow.

- Clearing round 2 of a finished TPE sweep (its plan and trial task, and what follows) reruns it:
  the sampler, rebuilt from round 1's results with its seed, asks for the same trials, which run
  again (``cache="off"``) into the MLflow runs they had, found again by their tags: no new run.
- The trigger form (the REST API's param validation) refuses more rounds or trials per round
  than the DAG builds, and a strategy that is not a sampler.

What the conf may change at run time, the cache and bad conf values are checked through
`airflow dags test` in ``test_adaptive_sweeps.py`` (cheaper than a scheduler's task processes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops_provider.sweeps import suggest_trials
from tests.integration.sweeps.adaptive_dags.adaptive_sweeps import SPACE
from tests.support.airflow_runs import task_instances, task_log, trigger_run, wait_run, xcom_value
from tests.support.airflow_services import airflow_services as start_airflow
from tests.support.airflow_services import serve_dags
from tests.support.mlflow_server import start_mlflow_server
from tests.support.mlflow_sweeps import sweep_runs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAGS = Path(__file__).parent / "adaptive_dags"
TPE = "adaptive_tpe"  # 3 rounds x 6, the form's maxima
SCHEDULED = "adaptive_tpe_scheduled"  # 2 rounds x 3, one batch per round, seed 2
ROUNDS = 2


@pytest.fixture(scope="module")
def services(airflow_db, tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("adaptive-scheduled-mlflow"), timeout=300)
    logs = tmp_path_factory.mktemp("adaptive-scheduled-services")
    conn = json.dumps({"conn_type": "mlflow", "host": server.url})
    try:
        with start_airflow(
            DAGS,
            logs,
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW_CONN_MLFLOW_DEFAULT=conn,
            SWEEP_TRACKED="1",
        ) as api:
            serve_dags(api, TPE, SCHEDULED)
            yield api, server
    finally:
        server.stop()


def _plans(api, dag_id: str, run_id: str, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    plans = [xcom_value(api, dag_id, run_id, f"round_{k}.plan", "sweep_plan") for k in range(1, rounds + 1)]
    assert all(plan is not None for plan in plans), plans
    return plans


def _ids(plan: dict[str, Any]) -> list[str]:
    return [t["trial_id"] for t in plan["trials"]]


def _states(tis: dict[tuple[str, int], dict[str, Any]], task_id: str) -> list[tuple[int, str, int]]:
    """``(map_index, state, try_number)`` of a task's instances."""
    return sorted((m, ti["state"], ti["try_number"]) for (t, m), ti in tis.items() if t == task_id)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"rounds": 4}, "4 is greater than the maximum of 3"),
        ({"rounds": 0}, "0 is less than the minimum of 1"),
        ({"trials_per_round": 7}, "7 is greater than the maximum of 6"),
        ({"strategy": "bogus"}, "'bogus' is not one of ['tpe', 'cmaes', 'qmc', 'random']"),
        ({"strategy": "grid"}, "'grid' is not one of ['tpe', 'cmaes', 'qmc', 'random']"),
    ],
    ids=["rounds-over-built", "zero-rounds", "trials-per-round-over-built", "unknown-strategy", "grid"],
)
def test_the_form_refuses_more_rounds_than_the_dag_builds(services, conf, message):
    api, _ = services
    status, body = api.call("POST", f"/dags/{TPE}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 400, body
    assert message in body["detail"], body


def test_clearing_round_2_asks_for_the_same_trials_and_reuses_their_runs(services):
    api, server = services
    run_id = trigger_run(api, SCHEDULED, {"cache": "off"})
    assert wait_run(api, SCHEDULED, run_id)["state"] == "success"
    before = _plans(api, SCHEDULED, run_id)
    summary = xcom_value(api, SCHEDULED, run_id, "select_best")
    _, children = sweep_runs(server.url, SCHEDULED, run_id)
    runs_before = {c.data.tags["mlops.trial_id"]: c.info.run_id for c in children}
    assert len(runs_before) == len(children) == 6
    assert set(runs_before) == {tid for plan in before for tid in _ids(plan)}

    status, body = api.call(
        "POST",
        f"/dags/{SCHEDULED}/clearTaskInstances",
        {
            "dag_run_id": run_id,
            "task_ids": ["round_2.plan", "round_2.train"],
            "include_downstream": True,
            "only_failed": False,
            "dry_run": False,
        },
    )
    assert status == 200, body
    cleared = {ti["task_id"] for ti in body["task_instances"]}
    assert cleared == {"round_2.plan", "round_2.train", "select_best"}

    def rerun_done():
        status, run = api.call("GET", f"/dags/{SCHEDULED}/dagRuns/{run_id}")
        tis = task_instances(api, SCHEDULED, run_id)
        done = run.get("state") in ("success", "failed") and tis[("select_best", -1)]["try_number"] == 2
        return done, run

    assert api.wait_for(f"cleared run {run_id} to finish", rerun_done, timeout=400)["state"] == "success"
    tis = task_instances(api, SCHEDULED, run_id)
    assert _states(tis, "round_1.train") == [(0, "success", 1)]  # not cleared: not rerun
    assert _states(tis, "round_2.plan") == [(-1, "success", 2)]
    assert _states(tis, "round_2.train") == [(0, "success", 2)]  # its trials ran again (cache off)
    after = _plans(api, SCHEDULED, run_id)
    assert after[0] == before[0]  # not cleared
    assert _ids(after[1]) == _ids(before[1])  # the same trials were asked again
    assert after[1]["trials"] == before[1]["trials"]
    assert after[1]["cached"] == []
    # ... because the sampler was told round 1's results: told none (all failed), TPE would not
    # model yet and would ask other trials
    records = {r["trial_id"]: r for r in summary["leaderboard"]}
    as_failed = [[{**records[tid], "status": "failed"} for tid in _ids(before[0])]]
    assert [records[tid]["status"] for tid in _ids(before[0])] == ["success"] * 3
    other = suggest_trials(SPACE, 3, strategy="tpe", seed=2, metric="loss", history=as_failed)
    assert [t["trial_id"] for t in other] != _ids(before[1])
    _, children = sweep_runs(server.url, SCHEDULED, run_id)
    assert {c.data.tags["mlops.trial_id"]: c.info.run_id for c in children} == runs_before
    log = task_log(api, SCHEDULED, run_id, "round_2.train", 2, map_index=0)
    for trial_id in _ids(before[1]):
        assert f"Trial {trial_id}: reusing its MLflow run {runs_before[trial_id]}" in log, log[-3000:]
    again = xcom_value(api, SCHEDULED, run_id, "select_best")
    assert [(r["trial_id"], r["status"], r.get("metrics")) for r in again["leaderboard"]] == [
        (r["trial_id"], r["status"], r.get("metrics")) for r in summary["leaderboard"]
    ]
