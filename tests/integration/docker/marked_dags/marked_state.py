"""A GpuDockerOperator task that runs for minutes, to be marked failed or success while it runs.

The container's PID 1 is python3 sleeping, which ignores SIGTERM (PID 1 has no default signal
handlers): stopping it always takes the full grace period, the case that left containers behind.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from airflow_mlops_provider.operators.docker import GpuDockerOperator


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
def mlops_marked_state():
    GpuDockerOperator(
        task_id="train",
        image=os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm"),
        command=["python3", "-c", "import time; print('training', flush=True); time.sleep(300)"],
        mount_tmp_dir=False,
    )


mlops_marked_state()
