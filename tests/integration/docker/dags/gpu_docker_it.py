"""DAG run by the integration tests with ``airflow dags test`` (copied into a temp DAGs folder)."""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.operators.docker import GpuDockerOperator

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
RESULT = (
    "import json, os; "
    "json.dump({'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES'), 'i': os.environ.get('I')}, "
    "open('/airflow/xcom/return.json', 'w'))"
)
TICKS = "import time; print('tick 1', flush=True); time.sleep(1.5); print('tick 2', flush=True)"
COMMON = {"image": IMAGE, "mount_tmp_dir": False, "host_gpus": 4}
# No host_gpus: [mlops] docker_host_gpus (set by the test) names the GPUs.
NAMED = {"image": IMAGE, "mount_tmp_dir": False}


@dag(dag_id="gpu_docker_it", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def gpu_docker_it():
    two = GpuDockerOperator(
        task_id="two_gpus", command=["python3", "-c", RESULT], resources={"gpus": 2}, **COMMON
    )
    exact = GpuDockerOperator(
        task_id="exact_ids", command=["python3", "-c", RESULT], gpu_ids=["1", "3"], **COMMON
    )
    mapped = GpuDockerOperator.partial(
        task_id="mapped", command=["python3", "-c", RESULT], resources={"gpus": 1}, **COMMON
    ).expand(env=[{"I": "0"}, {"I": "1"}, {"I": "2"}])
    GpuDockerOperator(
        task_id="limits",
        command=["true"],
        resources={"gpus": 1, "memory": "256Mi", "cpus": 0.5, "shm_size": "64Mi"},
        keep_container=True,
        return_result_file=False,
        **COMMON,
    )
    fallback = GpuDockerOperator(
        task_id="cpu_fallback",
        command=["python3", "-c", RESULT],
        resources="{{ params.get('fallback_resources', {'gpus': 1}) | tojson }}",
        gpu_runtime_check="runtime",
        gpu_fallback="cpu",
        **COMMON,
    )
    GpuDockerOperator(
        task_id="no_runtime",
        command=["true"],
        resources={"gpus": 1},
        gpu_runtime_check="runtime",
        retries=3,
        **COMMON,
    )
    typed = GpuDockerOperator(
        task_id="typed",
        command=["python3", "-c", RESULT],
        resources={"gpus": 1, "gpu_type": "NVIDIA-A100-SXM4-80GB"},
        **NAMED,
    )
    GpuDockerOperator(
        task_id="wrong_type",
        command=["true"],
        resources={"gpus": 1, "gpu_type": "NVIDIA-H100-80GB-HBM3"},
        retries=3,
        **NAMED,
    )
    GpuDockerOperator(task_id="ticks", command=["python3", "-c", TICKS], **COMMON)
    last = GpuDockerOperator(
        task_id="last_line", command=["sh", "-c", "echo first; echo last"], log_xcom=True, **COMMON
    )

    @task
    def collect(two, exact, mapped, fallback, typed, dag_run=None, ti=None):
        out = {
            "typed": typed,
            "two_gpus": two,
            "exact_ids": exact,
            "mapped": list(mapped),
            "cpu_fallback": fallback,
            "last_line": ti.xcom_pull(task_ids="last_line"),
        }
        with open(dag_run.conf["out"], "w") as fh:
            json.dump(out, fh)

    last >> collect(two.output, exact.output, mapped.output, fallback.output, typed.output)


gpu_docker_it()
