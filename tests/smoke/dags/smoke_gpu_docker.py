"""Smoke DAG: one GpuDockerOperator task asking for two GPUs, and a task that saves its result."""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.operators.docker import GpuDockerOperator

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
RESULT = (
    "import json, os; "
    "json.dump({'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES'), 'lr': os.environ.get('LR')}, "
    "open('/airflow/xcom/return.json', 'w'))"
)


@dag(dag_id="smoke_gpu_docker", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def smoke_gpu_docker():
    train = GpuDockerOperator(
        task_id="train",
        image=IMAGE,
        command=["python3", "-c", RESULT],
        env={"LR": "0.1"},
        resources={"gpus": 2, "memory": "256Mi"},
        host_gpus=4,
        mount_tmp_dir=False,
    )

    @task
    def save(result: dict, dag_run=None) -> None:
        with open(dag_run.conf["out"], "w") as fh:
            json.dump(result, fh)

    save(train.output)


smoke_gpu_docker()
