"""Adaptive (TPE) and successive-halving sweep DAGs for the integration tests of issue 15.

The objective is closed-form with a known optimum (``x=0.3``, ``y=7``, ``opt="b"``), so a test can
tell a sampler that learns from one that does not; ``y == 0`` is a failing region (the Python
trial raises, the container exits 1). A budget adds ``0.5 / budget`` to the loss.

- ``adaptive_python``: two sweeps of Python trials side by side (one DAG run costs less than two
  in the tests), each its own MLflow experiment ``adaptive_python.<group>``: group ``tpe``, TPE
  3 rounds x 6, seed 11; group ``halving``, halving(1, 9, eta=3) over 9 trials, seed 5;
- ``adaptive_docker``: the same on container trials: ``tpe`` 2 rounds x 3, seed 13; ``halving``,
  halving(1, 4, eta=2) over 4 trials, seed 4;
- ``adaptive_tpe``: TPE alone, 3 rounds x 6 Python trials, seed 11 (the form may ask for fewer);
- ``adaptive_bad_conf``: four sweeps side by side, reading the same conf: ``short`` (1 round x
  4), ``narrow`` (2 x 3), ``wide`` (2 x 4) and ``cmaes`` (2 x 4, CMA-ES on the space of the
  ``cmaes_space`` param); its params are plain values (no form schema), so a bad conf reaches
  the run-time checks of the plan tasks, and one conf can fail each sweep on another check;
  every task has a retry, which a configuration error must not use;
- ``adaptive_tpe_scheduled``: TPE, 2 rounds x 3 Python trials in one batch per round, seed 2
  (round 1 all succeed, so TPE models round 2), for the clear-and-rerun test under a real
  scheduler (no report task: each task there is a process).

``report`` writes ``$SWEEP_RESULT_DIR/<dag_id>[.<group>].json`` when that is set: the select task's
result, every stage's ``sweep_plan`` XCom and the run id. ``$SWEEP_TRACKED=1`` tracks in MLflow (the
``mlflow_default`` connection), else tracking is off.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import adaptive_sweep, container_trials, halving, halving_sweep, trial_task

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 0, "high": 10},
    "opt": ["a", "b", "c"],
}
TRACKED = os.environ.get("SWEEP_TRACKED") == "1"
CONN = "mlflow_default" if TRACKED else None
IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")


def loss_of(x: float, y: int, opt: str, budget: float | None = None) -> float:
    """The objective: 0 at the optimum; a smaller budget adds an error that shrinks as it grows."""
    loss = (x - 0.3) ** 2 + ((y - 7) / 10) ** 2 + (0.0 if opt == "b" else 0.3)
    if budget is not None:
        loss += 0.5 / budget
    return loss


@trial_task
def train(x: float, y: int, opt: str, budget: float | None = None) -> dict:
    """A trial: fails on purpose at y == 0 (the sampler is told it failed)."""
    if y == 0:
        raise ValueError("y=0 is a failing region")
    return {"loss": loss_of(x, y, opt, budget), "outputs": {"budget": budget}}


# The same objective in a container: hparams from $MLOPS_TRIAL, budget from $MLOPS_BUDGET, the
# templated argument (``{{ trial.round }}`` or ``{{ trial.budget }}``) echoed back.
CONTAINER_TRIAL = """
import json, os, pathlib, sys
trial = json.loads(os.environ["MLOPS_TRIAL"])
h = trial["hparams"]
budget = os.environ.get("MLOPS_BUDGET")
print(f"trial {os.environ['MLOPS_TRIAL_ID']} {h} budget={budget} argv={sys.argv[1:]}", flush=True)
if h["y"] == 0:
    print("y=0 is a failing region", file=sys.stderr, flush=True)
    sys.exit(1)
loss = (h["x"] - 0.3) ** 2 + ((h["y"] - 7) / 10) ** 2 + (0.0 if h["opt"] == "b" else 0.3)
if budget is not None:
    loss += 0.5 / float(budget)
out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
out.parent.mkdir(parents=True, exist_ok=True)
outputs = {"budget_env": budget, "argv": sys.argv[1:], "trial": trial}
out.write_text(json.dumps({"loss": loss, "outputs": outputs}))
"""


def docker_trials(argument: str):
    """The container trial task for a stage's batches (``argument`` is a templated argv entry)."""
    return lambda batches: container_trials(
        task_id="train",
        batches=batches,
        runtime="docker",
        image=IMAGE,
        command=["python3", "-c", CONTAINER_TRIAL, argument],
    )


@task
def report(result: dict, group: str | None = None) -> None:
    """Write ``$SWEEP_RESULT_DIR/<dag_id>[.<group>].json``: the result, every stage's ``sweep_plan``, the run id."""
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if not out_dir:
        return
    context = get_current_context()
    dag_obj = context["dag"]
    prefix = f"{group}." if group else ""
    plans = {
        task_id: context["ti"].xcom_pull(task_ids=task_id, key="sweep_plan")
        for task_id in dag_obj.task_ids
        if task_id.startswith(prefix) and task_id.endswith(".plan")
    }
    out = {"summary": result, "plans": plans, "run_id": context["run_id"]}
    name = f"{dag_obj.dag_id}.{group}" if group else dag_obj.dag_id
    Path(out_dir, f"{name}.json").write_text(json.dumps(out, default=str))


def _dag(dag_id: str, params: dict[str, Any], **kwargs: Any):
    return dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params=params,
        tags=["test", "sweeps"],
        **kwargs,
    )


def _tpe_and_halving(dag_id: str, trials: Any, halving_trials: Any, *, tpe: dict, rungs: dict) -> None:
    """A TPE sweep (group ``tpe``) and a halving sweep (group ``halving``), each its own MLflow experiment."""
    best = adaptive_sweep(
        trials,
        group_id="tpe",
        experiment_name=f"{dag_id}.tpe",
        mlflow_conn_id=CONN,
        min_success_ratio=0.3,
        **tpe,
    )
    report.override(task_id="report_tpe")(best, "tpe")
    schedule = rungs.pop("schedule")
    best = halving_sweep(
        halving_trials,
        schedule,
        group_id="halving",
        strategy="random",
        experiment_name=f"{dag_id}.halving",
        mlflow_conn_id=CONN,
        min_success_ratio=0.3,
        **rungs,
    )
    report.override(task_id="report_halving")(best, "halving")


@_dag(
    "adaptive_python",
    sweep_params(search_space=SPACE, strategy="tpe", rounds=3, trials_per_round=6, n_trials=9),
)
def adaptive_python():
    _tpe_and_halving(
        "adaptive_python",
        train,
        train,
        tpe={"rounds": 3, "trials_per_round": 6, "seed": 11},
        rungs={"schedule": halving(min_budget=1, max_budget=9, eta=3), "n_trials": 9, "seed": 5},
    )


@_dag(
    "adaptive_docker",
    sweep_params(
        search_space=SPACE, strategy="tpe", rounds=2, trials_per_round=3, n_trials=4, runtime="docker"
    ),
)
def adaptive_docker():
    _tpe_and_halving(
        "adaptive_docker",
        docker_trials("--round={{ trial.round }}"),
        docker_trials("--budget={{ trial.budget }}"),
        tpe={"rounds": 2, "trials_per_round": 3, "seed": 13},
        rungs={"schedule": halving(min_budget=1, max_budget=4, eta=2), "n_trials": 4, "seed": 4},
    )


@_dag("adaptive_tpe", sweep_params(search_space=SPACE, strategy="tpe", rounds=3, trials_per_round=6, seed=11))
def adaptive_tpe():
    best = adaptive_sweep(train, rounds=3, trials_per_round=6, mlflow_conn_id=CONN, min_success_ratio=0.3)
    report(best)


@_dag(
    "adaptive_bad_conf",
    {
        "search_space": SPACE,
        "strategy": "tpe",
        "rounds": 1,
        "trials_per_round": 3,
        "metric": "loss",
        "cmaes_space": {"x": SPACE["x"], "opt": SPACE["opt"]},
    },
    # a configuration error must fail without the retry Airflow gives other errors
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
)
def adaptive_bad_conf():
    adaptive_sweep(train, rounds=1, trials_per_round=4, group_id="short", mlflow_conn_id=None)
    adaptive_sweep(train, rounds=2, trials_per_round=3, group_id="narrow", mlflow_conn_id=None)
    adaptive_sweep(train, rounds=2, trials_per_round=4, group_id="wide", mlflow_conn_id=None)
    adaptive_sweep(
        train,
        rounds=2,
        trials_per_round=4,
        strategy="cmaes",
        search_space_params="cmaes_space",
        group_id="cmaes",
        mlflow_conn_id=None,
    )


@_dag(
    "adaptive_tpe_scheduled",
    sweep_params(search_space=SPACE, strategy="tpe", rounds=2, trials_per_round=3, seed=2),
)
def adaptive_tpe_scheduled():
    adaptive_sweep(train, rounds=2, trials_per_round=3, max_parallel_tasks=1, mlflow_conn_id=CONN)


adaptive_python()
adaptive_docker()
adaptive_tpe()
adaptive_bad_conf()
adaptive_tpe_scheduled()
