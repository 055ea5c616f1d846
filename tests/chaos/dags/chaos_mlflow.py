"""The MLflow registry under faults: log a model, register it, alias it ``candidate``, promote it.

``log_model`` logs a small model (a JSON artifact under ``model/`` and the metric ``score`` of
``params.score``) to a run of experiment ``chaos-mlflow``, reusing its run on a retry;
``register`` registers it as ``params.model`` (:class:`MlflowRegisterModelOperator`);
``candidate`` points alias ``candidate`` at that version (:class:`MlflowSetAliasOperator`) and
``promote`` moves ``champion`` to it when its ``score`` beats the champion's
(:class:`MlflowPromoteModelOperator`). Every task reaches MLflow through ``mlflow_chaos`` (the
fault proxy) and is retried.

Each task first sets MLflow's client to give a request 4 s (not 120 s: a held request is past
the timeout in seconds) and ``params.client_retries`` retries of its own (0 by default, so every
fault reaches the operators rather than MLflow's client). mlflow is imported inside the tasks.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)

CONN = "mlflow_chaos"
EXPERIMENT = "chaos-mlflow"
#: MLFLOW_HTTP_REQUEST_TIMEOUT of every task: what a "delay" fault must exceed.
REQUEST_TIMEOUT_S = 4
VERSION = "{{ ti.xcom_pull(task_ids='register')['version'] }}"


def mlflow_client_settings(context: Any) -> None:
    """pre_execute of every task: MLflow's client timeout and retries, for this task process."""
    retries = int(context["params"]["client_retries"])
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(REQUEST_TIMEOUT_S)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"


TASK_ARGS: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=2),
    "pre_execute": mlflow_client_settings,
}

with DAG(
    "chaos_mlflow",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=32,
    params={
        "model": Param("chaos-model", type="string"),
        "score": Param(0.9, type="number"),
        "client_retries": Param(0, type="integer", minimum=0),
    },
    tags=["chaos"],
):

    @task(task_id="log_model", **TASK_ARGS)
    def log_model(params: dict[str, Any], run_id: str) -> str:
        """Log the model and its score to this DAG run's MLflow run (created once); return its id."""
        import json

        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        hook = MlflowHook(mlflow_conn_id=CONN)
        client = hook.get_conn()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise RuntimeError(f"experiment {EXPERIMENT!r} is missing (the test creates it)")
        tags = {"chaos.model": params["model"], "chaos.dag_run": run_id}
        found = hook.search_runs_by_tags([experiment.experiment_id], tags)
        mlflow_run = found[0] if found else client.create_run(experiment.experiment_id, tags=tags)
        mlflow_run_id = mlflow_run.info.run_id
        client.log_metric(mlflow_run_id, "score", float(params["score"]))
        model = {"kind": "threshold", "threshold": 0.5, "score": float(params["score"])}
        hook.log_text_artifact(mlflow_run_id, json.dumps(model), "model/model.json")
        client.set_terminated(mlflow_run_id)
        return mlflow_run_id

    register = MlflowRegisterModelOperator(
        task_id="register",
        model_name="{{ params.model }}",
        run_id="{{ ti.xcom_pull(task_ids='log_model') }}",
        artifact_path="model",
        mlflow_conn_id=CONN,
        **TASK_ARGS,
    )
    candidate = MlflowSetAliasOperator(
        task_id="candidate",
        model_name="{{ params.model }}",
        alias="candidate",
        version=VERSION,
        mlflow_conn_id=CONN,
        **TASK_ARGS,
    )
    promote = MlflowPromoteModelOperator(
        task_id="promote",
        model_name="{{ params.model }}",
        challenger_version=VERSION,
        metric="score",
        alias="champion",
        mlflow_conn_id=CONN,
        **TASK_ARGS,
    )
    log_model() >> register >> [candidate, promote]
