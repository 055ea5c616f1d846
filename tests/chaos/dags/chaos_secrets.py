"""Tasks that handle every secret of the chaos stack, one of them leaking on purpose.

- ``leak_on_purpose`` prints and logs the MLflow token (and the env secret) as careless user code
  would: Airflow's masker must redact them in the real task log;
- ``train`` runs a GpuDockerOperator whose container prints the secret it gets through ``env``
  and checkpoints to S3 (moto) through the ``aws_chaos`` connection's keys.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import DAG, task

from airflow_mlops_provider.operators.docker import GpuDockerOperator

with DAG(
    "chaos_secrets",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["chaos"],
):

    @task
    def leak_on_purpose() -> dict[str, str]:
        from airflow.sdk import Connection, Variable

        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        token = Connection.get("mlflow_chaos").password
        MlflowHook(mlflow_conn_id="mlflow_chaos").get_conn()  # our hook reads and masks it too
        print(f"deliberately printing the MLflow token: {token}")
        logging.getLogger(__name__).info("deliberately logging the MLflow token: %s", token)
        env_secret = Variable.get("chaos_api_secret")
        print(f"deliberately printing the env secret: {env_secret}")
        return {"note": "the token was logged, never returned"}

    leak_on_purpose() >> GpuDockerOperator(
        task_id="train",
        image=os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm"),
        command=[
            "sh",
            "-c",
            'echo "container got API_SECRET=$API_SECRET"; mkdir -p "$MLOPS_CHECKPOINT_DIR";'
            ' echo step > "$MLOPS_CHECKPOINT_DIR/state"; echo \'{"ok": true}\' > /airflow/xcom/return.json',
        ],
        env={"API_SECRET": "{{ var.value.chaos_api_secret }}"},
        resources={"gpus": 1},
        host_gpus=4,
        mount_tmp_dir=False,
        checkpoint="s3://chaos-checkpoints/airflow",
        checkpoint_conn_id="aws_chaos",
        checkpoint_interval=1,
    )
