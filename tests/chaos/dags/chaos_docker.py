"""GpuDockerOperator DAGs the chaos suite kills in every way a task dies.

The trainer is a container whose PID 1 is python3 (which ignores SIGTERM, so a stop always takes
the full grace period, the worst case). At each start it writes ``start-<ns>`` into
``<markers>/<run_id>/``, a bind mount from the host, and ``end-<ns>`` when it completes, so the
suite counts how often a task instance's trainer ran. It sleeps ``params.sleep`` seconds on the
first try and ``params.retry_sleep`` on later ones (a reattached container keeps its first-try
sleep: it is the same run).
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import DAG, Param

from airflow_mlops_provider.operators.docker import GpuDockerOperator

MARKERS = os.environ.get("MLOPS_CHAOS_MARKERS", "/tmp/mlops-chaos-markers")
TRAINER = (
    "import json, os, time\n"
    "d = os.path.join('/markers', os.environ['RUN_ID'])\n"
    "os.makedirs(d, exist_ok=True)\n"
    "open(os.path.join(d, 'start-%d' % time.time_ns()), 'w').close()\n"
    "print('training for', os.environ['SLEEP'], 's', flush=True)\n"
    "time.sleep(float(os.environ['SLEEP']))\n"
    "json.dump({'run_id': os.environ['RUN_ID']}, open('/airflow/xcom/return.json', 'w'))\n"
    "open(os.path.join(d, 'end-%d' % time.time_ns()), 'w').close()\n"
)


def _docker_dag(dag_id: str, *, retries: int, execution_timeout: dt.timedelta | None = None) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params={"sleep": Param(300, type="number"), "retry_sleep": Param(2, type="number")},
        tags=["chaos"],
    ) as dag:
        GpuDockerOperator(
            task_id="train",
            image=os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm"),
            command=["python3", "-c", TRAINER],
            env={
                "RUN_ID": "{{ run_id }}",
                "SLEEP": "{{ params.sleep if ti.try_number == 1 else params.retry_sleep }}",
                "API_SECRET": "{{ var.value.chaos_api_secret }}",
            },
            resources={"gpus": 1, "memory": "256Mi"},
            host_gpus=4,
            mounts=[{"target": "/markers", "source": MARKERS, "type": "bind"}],
            mount_tmp_dir=False,
            retries=retries,
            retry_delay=dt.timedelta(seconds=1),
            execution_timeout=execution_timeout,
        )
    return dag


chaos_docker = _docker_dag("chaos_docker", retries=1)
chaos_docker_timeout = _docker_dag(
    "chaos_docker_timeout", retries=0, execution_timeout=dt.timedelta(seconds=12)
)
