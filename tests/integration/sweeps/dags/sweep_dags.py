"""Sweep DAGs for the integration tests: a trivial objective swept with the ready-made tasks.

``report`` writes the sweep's outcome to ``$SWEEP_RESULT_DIR/<dag_id>.json`` (when set) so the
tests can check what the real run computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task, trials_from_grid

DEFAULT_SPACE = {
    "lr": {"distribution": "float", "low": 0.001, "high": 0.1, "log": True, "num": 3},
    "depth": {"distribution": "int", "low": 1, "high": 3},
    "optimizer": ["adam", "sgd"],
    "fail": False,
}


@trial_task
def objective(trial_id: str, resources: dict | None = None, **params: Any) -> dict:
    """A trivial trial: its loss is a fixed function of its parameters; ``fail=True`` raises."""
    if params.get("fail"):
        raise RuntimeError(f"injected failure in trial {trial_id}")
    loss = sum(abs(v) for v in params.values() if isinstance(v, (int, float)) and not isinstance(v, bool))
    loss += 0.5 if params.get("optimizer") == "sgd" else 0.0
    return {"loss": loss, "score": -loss, "gpus": (resources or {}).get("gpus", 0)}


@task
def report(summary: dict, batches: list) -> None:
    out_dir = os.environ.get("SWEEP_RESULT_DIR")
    if not out_dir:
        return
    context = get_current_context()
    planned = context["ti"].xcom_pull(task_ids="plan_sweep", key="sweep_trials")
    data = {
        "run_id": context["run_id"],
        "conf_search_space": context["params"]["search_space"],
        "n_batches": len(batches),
        "planned": planned,
        "summary": summary,
    }
    path = Path(out_dir) / f"{context['dag'].dag_id}.json"
    path.write_text(json.dumps(data))


def _sweep_dag(dag_id: str, **params: Any):
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(**params),
        tags=["mlops", "test"],
    )
    def sweep():
        batches = plan_sweep()
        results = objective.expand_kwargs(batches)
        report(select_best_trial(results, batches), batches)

    return sweep()


sweep_grid = _sweep_dag("sweep_grid", search_space=DEFAULT_SPACE, strategy="grid")
sweep_random = _sweep_dag(
    "sweep_random",
    search_space={"x": {"low": -1.0, "high": 1.0}, "n": {"low": 1, "high": 1000, "log": True}},
    strategy="random",
    n_trials=12,
    seed=7,
)
sweep_10k = _sweep_dag(
    "sweep_10k",
    search_space={"x": {"low": 0.0, "high": 1.0}, "y": {"low": 0, "high": 1_000_000}},
    strategy="random",
    n_trials=10_000,
    seed=1,
)


@dag(
    dag_id="sweep_plain",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "test"],
)
def sweep_plain():
    """Trials fed straight into expand_kwargs (one mapped task per trial), with per-trial resources."""
    trials = trials_from_grid({"x": [1, 2], "resources": [{"gpus": 0}, {"gpus": 2}]})
    summary = select_best_trial(objective.expand_kwargs(trials), trials, metric="loss", mode="min")

    @task
    def report_plain(summary: dict) -> None:
        out_dir = os.environ.get("SWEEP_RESULT_DIR")
        if out_dir:
            data = {"summary": summary, "planned": trials}
            (Path(out_dir) / "sweep_plain.json").write_text(json.dumps(data))

    report_plain(summary)


sweep_plain()
