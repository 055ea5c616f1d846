"""Adaptive (TPE) and successive-halving sweep DAGs for the integration tests of issue 15.

The objective is closed-form with a known optimum (``x=0.3``, ``y=7``, ``opt="b"``), so a test can
tell a sampler that learns from one that does not; ``y == 0`` is a failing region (the Python
trial raises, the container exits 1). A budget adds ``0.5 / budget`` to the loss.

- ``adaptive_tpe``: TPE, 3 rounds x 6 Python trials, seed 11 (the form may ask for fewer);
- ``adaptive_halving``: halving(1, 9, eta=3) over 9 Python trials, seed 5;
- ``adaptive_tpe_docker``: TPE, 2 rounds x 3 container trials, seed 13;
- ``adaptive_halving_docker``: halving(1, 4, eta=2) over 4 container trials, seed 4;
- ``adaptive_bad_conf``: three sweeps side by side (``small`` 2 x 2, ``large`` 3 x 3, ``cmaes``
  3 x 3 on the space of the ``cmaes_space`` param), reading the same conf; its params are plain
  values (no form schema), so a bad conf reaches the run-time checks of the plan tasks; every
  task has a retry, which a configuration error must not use;
- ``adaptive_tpe_scheduled``: TPE, 3 rounds x 3 Python trials in one batch per round, seed 2,
  for the clear-and-rerun test under a real scheduler (no report task).

``report`` writes ``$SWEEP_RESULT_DIR/<dag_id>.json`` when that is set: the select task's result,
every stage's ``sweep_plan`` XCom and the run id. ``$SWEEP_TRACKED=1`` tracks in MLflow (the
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
def report(result: dict) -> None:
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if not out_dir:
        return
    context = get_current_context()
    dag_obj = context["dag"]
    plans = {
        task_id: context["ti"].xcom_pull(task_ids=task_id, key="sweep_plan")
        for task_id in dag_obj.task_ids
        if task_id.endswith(".plan")
    }
    out = {"summary": result, "plans": plans, "run_id": context["run_id"]}
    Path(out_dir, f"{dag_obj.dag_id}.json").write_text(json.dumps(out, default=str))


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


@_dag("adaptive_tpe", sweep_params(search_space=SPACE, strategy="tpe", rounds=3, trials_per_round=6, seed=11))
def adaptive_tpe():
    report(adaptive_sweep(train, rounds=3, trials_per_round=6, mlflow_conn_id=CONN, min_success_ratio=0.3))


@_dag("adaptive_halving", sweep_params(search_space=SPACE, n_trials=9, seed=5))
def adaptive_halving():
    schedule = halving(min_budget=1, max_budget=9, eta=3)
    report(halving_sweep(train, schedule, n_trials=9, mlflow_conn_id=CONN, min_success_ratio=0.3))


@_dag(
    "adaptive_tpe_docker",
    sweep_params(search_space=SPACE, strategy="tpe", rounds=2, trials_per_round=3, seed=13, runtime="docker"),
)
def adaptive_tpe_docker():
    trials = docker_trials("--round={{ trial.round }}")
    report(adaptive_sweep(trials, rounds=2, trials_per_round=3, mlflow_conn_id=CONN, min_success_ratio=0.3))


@_dag("adaptive_halving_docker", sweep_params(search_space=SPACE, n_trials=4, seed=4, runtime="docker"))
def adaptive_halving_docker():
    schedule = halving(min_budget=1, max_budget=4, eta=2)
    trials = docker_trials("--budget={{ trial.budget }}")
    report(halving_sweep(trials, schedule, n_trials=4, mlflow_conn_id=CONN, min_success_ratio=0.3))


@_dag(
    "adaptive_bad_conf",
    {
        "search_space": SPACE,
        "strategy": "tpe",
        "rounds": 2,
        "trials_per_round": 2,
        "metric": "loss",
        "cmaes_space": {"x": SPACE["x"], "opt": SPACE["opt"]},
    },
    # a configuration error must fail without the retry Airflow gives other errors
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
)
def adaptive_bad_conf():
    adaptive_sweep(train, rounds=2, trials_per_round=2, group_id="small", mlflow_conn_id=None)
    adaptive_sweep(train, rounds=3, trials_per_round=3, group_id="large", mlflow_conn_id=None)
    adaptive_sweep(
        train,
        rounds=3,
        trials_per_round=3,
        strategy="cmaes",
        search_space_params="cmaes_space",
        group_id="cmaes",
        mlflow_conn_id=None,
    )


@_dag(
    "adaptive_tpe_scheduled",
    sweep_params(search_space=SPACE, strategy="tpe", rounds=3, trials_per_round=3, seed=2),
)
def adaptive_tpe_scheduled():
    adaptive_sweep(train, rounds=3, trials_per_round=3, max_parallel_tasks=1, mlflow_conn_id=CONN)


adaptive_tpe()
adaptive_halving()
adaptive_tpe_docker()
adaptive_halving_docker()
adaptive_bad_conf()
adaptive_tpe_scheduled()
