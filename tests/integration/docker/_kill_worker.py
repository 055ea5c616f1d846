"""A worker process running one GpuDockerOperator task, killed by test_reaper.py as Airflow does.

Usage: python -m tests.integration.docker._kill_worker DAG_ID IMAGE MARKERS GRACE

It installs what Airflow's task runner installs (on SIGTERM: ``task.on_kill()``, then carry on),
prints ``executing`` and runs the task. The trainer writes ``<MARKERS>/started`` when it starts,
then sleeps, with SIGTERM ignored (python3 as PID 1), so stopping it takes the whole grace.
"""

from __future__ import annotations

import signal
import sys

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import make_context, py

CODE = "import time; open('/markers/started', 'w').close(); print('started', flush=True); time.sleep(120)"


def main() -> None:
    dag_id, image, markers, grace = sys.argv[1:5]
    op = GpuDockerOperator(
        task_id="t",
        image=image,
        command=py(CODE),
        mounts=[{"target": "/markers", "source": markers, "type": "bind"}],
        resources={"gpus": 1},
        host_gpus=1,
        mount_tmp_dir=False,
        stop_grace_period=int(grace),
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    print("executing", flush=True)
    op.execute(make_context(dag_id))


if __name__ == "__main__":
    main()
