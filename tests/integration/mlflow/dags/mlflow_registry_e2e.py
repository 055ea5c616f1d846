"""End-to-end registry DAG: register A and B, champion/challenger, branch, alias, sense."""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, task

from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)
from airflow_mlops_provider.sensors.mlflow import MlflowModelVersionSensor

MODEL = "{{ params.model_name }}"
B_VERSION = "{{ ti.xcom_pull(task_ids='register_b')['version'] }}"

with DAG(
    "mlflow_registry_e2e",
    schedule=None,
    params={
        "model_name": Param("e2e-model", type="string"),
        "run_a": Param("", type="string"),
        "run_b": Param("", type="string"),
        "model_id": Param("", type="string"),
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
        task_id="register_b",
        model_name=MODEL,
        source="models:/{{ params.model_id }}",
        run_id="{{ params.run_b }}",
        tags={"stage": "challenger"},
    )
    promote = MlflowPromoteModelOperator(
        task_id="promote",
        model_name=MODEL,
        challenger_version=B_VERSION,
        metric="val_auc",
        mode="max",
        min_delta=0.01,
    )

    @task.branch
    def choose(decision: dict) -> str:
        return "deploy" if decision["decision"] == "promote" else "keep"

    deploy, keep = EmptyOperator(task_id="deploy"), EmptyOperator(task_id="keep")
    tag_candidate = MlflowSetAliasOperator(
        task_id="tag_candidate", model_name=MODEL, alias="candidate", version=B_VERSION
    )
    wait_champion = MlflowModelVersionSensor(
        task_id="wait_champion",
        model_name=MODEL,
        alias="champion",
        min_version=B_VERSION,
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )

    @task
    def leak_attempt() -> None:
        """The task process must know the token as a secret: its masker redacts it."""
        import logging

        from airflow.sdk._shared.secrets_masker import redact

        hook = MlflowHook()
        hook.get_conn()
        redacted = str(redact(f"token seen by the task: {hook._settings['secret']}"))
        if hook._settings["secret"] in redacted:
            raise RuntimeError("the MLflow token is not registered with the secrets masker")
        logging.getLogger("airflow.task").warning("%s", redacted)

    register_a >> register_b >> promote
    choose(promote.output) >> [deploy, keep]
    deploy >> tag_candidate >> wait_champion >> leak_attempt()
