"""One registration on the demo's MLflow connection, for the extra links "MLflow run" and "MLflow model version"."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_mlops_provider.operators.mlflow import MlflowRegisterModelOperator

with DAG(
    "mlflow_demo_links",
    schedule=None,
    params={"model_name": Param("demo-links", type="string"), "run_id": Param("", type="string")},
):
    MlflowRegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        source="runs:/{{ params.run_id }}/model",
        run_id="{{ params.run_id }}",
        emit_asset_event=False,
    )
