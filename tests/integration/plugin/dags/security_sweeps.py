"""Two tiny sweeps for the plugin's security tests, carrying markup in a parameter and an error.

``sec_sweep_open`` and ``sec_sweep_denied`` are the same sweep; the test's auth manager lets
bob read only the first. One categorical value is ``"><svg onload=alert(1)>`` and the trial
with ``x=2`` and ``label="plain"`` fails with ``<script>alert(1)</script>`` in its error, so the
pages must escape what the sweep stored.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task

#: The markup a parameter value and a trial error carry.
PARAM_PAYLOAD = '"><svg onload=alert(1)>'
ERROR_PAYLOAD = "<script>alert(1)</script>"
SPACE = {"x": [1, 2], "label": [PARAM_PAYLOAD, "plain"]}


@trial_task
def objective(trial_id: str, resources: dict | None = None, **params: Any) -> dict:
    """Loss ``x`` (+0.5 for the payload label); ``x=2, label=plain`` raises with markup in its error."""
    if params["x"] == 2 and params["label"] == "plain":
        raise RuntimeError(f"trial {trial_id} broke: {ERROR_PAYLOAD}")
    return {"loss": float(params["x"]) + (0.5 if params["label"] == PARAM_PAYLOAD else 0.0)}


def _sweep(dag_id: str) -> Any:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(search_space=SPACE, strategy="grid", metric="loss", mode="min"),
        tags=["mlops", "test"],
    )
    def sweep() -> None:
        batches = plan_sweep()
        select_best_trial(objective.expand_kwargs(batches), batches)

    return sweep()


sec_sweep_open = _sweep("sec_sweep_open")
sec_sweep_denied = _sweep("sec_sweep_denied")
