"""Smoke DAG: register two model versions, then champion/challenger promotion of the second."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_mlops_provider.operators.mlflow import MlflowPromoteModelOperator, MlflowRegisterModelOperator

MODEL = "{{ params.model_name }}"

with DAG(
    "smoke_mlflow",
    schedule=None,
    params={
        "model_name": Param("smoke-model", type="string"),
        "run_a": Param("", type="string"),
        "run_b": Param("", type="string"),
    },
):
    register_a = MlflowRegisterModelOperator(
        task_id="register_a",
        model_name=MODEL,
        run_id="{{ params.run_a }}",
        artifact_path="model",
        alias="champion",
    )
    register_b = MlflowRegisterModelOperator(
        task_id="register_b", model_name=MODEL, run_id="{{ params.run_b }}", artifact_path="model"
    )
    promote = MlflowPromoteModelOperator(
        task_id="promote",
        model_name=MODEL,
        challenger_version="{{ ti.xcom_pull(task_ids='register_b')['version'] }}",
        metric="val_auc",
        mode="max",
    )
    register_a >> register_b >> promote
