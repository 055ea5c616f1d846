"""Read a tracked sweep back from a real MLflow server: its parent (sweep) runs, child (trial) runs, leaderboard."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def sweep_runs(url: str, experiment: str, run_id: str | None = None) -> tuple[list[Any], list[Any]]:
    """
    Return ``(parents, children)``: the sweep runs and the trial runs of ``experiment``.

    :param url: The tracking server.
    :param experiment: The experiment (a sweep's is its dag_id).
    :param run_id: Only the runs of this Airflow DAG run (tag ``airflow.run_id``).
    :raises AssertionError: when the experiment does not exist.
    """
    from mlflow import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment named {experiment!r}"
    where = f"tags.`airflow.run_id` = '{run_id}'" if run_id else ""
    runs = client.search_runs([found.experiment_id], filter_string=where, max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def leaderboard_of(url: str, run_id: str, dest: Path) -> dict[str, Any]:
    """Return the ``leaderboard.json`` artifact of a sweep run, downloaded under ``dest``."""
    from mlflow import MlflowClient

    local = MlflowClient(url).download_artifacts(run_id, "leaderboard.json", str(dest))
    with open(local) as fh:
        board: dict[str, Any] = json.load(fh)
    return board


def metric_steps(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Return a run's ``(step, value)`` history of metric ``key``, by step."""
    from mlflow import MlflowClient

    history = MlflowClient(url).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)
