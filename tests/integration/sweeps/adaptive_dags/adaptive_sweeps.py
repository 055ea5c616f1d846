"""Adaptive (TPE) and successive-halving sweep DAGs for the integration tests.

The objective is closed-form with a known optimum (``x=0.3``, ``y=7``, ``opt="b"``), so a test can
tell a sampler that learns from one that does not. ``report`` writes the select task's result to
``$SWEEP_RESULT_DIR/<dag_id>.json`` when that is set. ``$SWEEP_TRACKED=1`` tracks in MLflow
(the ``mlflow_default`` connection), else tracking is off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import adaptive_sweep, halving, halving_sweep, trial_task

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 0, "high": 10},
    "opt": ["a", "b", "c"],
}
TRACKED = os.environ.get("SWEEP_TRACKED") == "1"
CONN = "mlflow_default" if TRACKED else None


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


@task
def report(result: dict) -> None:
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if out_dir:
        context = get_current_context()
        Path(out_dir, f"{context['dag'].dag_id}.json").write_text(json.dumps(result, default=str))


def _dag(dag_id: str, params: dict[str, Any]):
    return dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params=params,
        tags=["test", "sweeps"],
    )


@_dag("adaptive_tpe", sweep_params(search_space=SPACE, strategy="tpe", rounds=3, trials_per_round=6, seed=3))
def adaptive_tpe():
    report(adaptive_sweep(train, rounds=3, trials_per_round=6, mlflow_conn_id=CONN, min_success_ratio=0.3))


@_dag("adaptive_halving", sweep_params(search_space=SPACE, n_trials=9, seed=5))
def adaptive_halving():
    best = halving_sweep(
        train, halving(min_budget=1, max_budget=9, eta=3), n_trials=9, mlflow_conn_id=CONN, min_success_ratio=0.3
    )
    report(best)


adaptive_tpe()
adaptive_halving()
