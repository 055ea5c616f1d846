"""A worker process running one GpuDockerOperator task, killed by test_reaper.py as Airflow does.

Usage: python -m tests.integration.docker._kill_worker DAG_ID IMAGE MARKERS GRACE [SLEEP RETRIES]

It installs what Airflow's task runner installs (on SIGTERM: ``task.on_kill()``, then carry on),
prints ``executing`` and runs the task. The trainer writes ``<MARKERS>/started`` when it starts,
then sleeps SLEEP seconds (default 120) with SIGTERM ignored (python3 as PID 1), so stopping it
takes the whole grace, and writes its result. RETRIES (default 0) is the task's ``retries``.
"""

from __future__ import annotations

import signal
import sys

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import make_context, py

CODE = (
    "import json, os, time\n"
    "open('/markers/started-%d' % time.time_ns(), 'w').close()\n"
    "print('started', flush=True)\n"
    "time.sleep(float(os.environ['SLEEP']))\n"
    "json.dump({'done': True}, open('/airflow/xcom/return.json', 'w'))\n"
)


def main() -> None:
    dag_id, image, markers, grace = sys.argv[1:5]
    sleep, retries = (sys.argv[5:7] + ["120", "0"][len(sys.argv[5:7]) :])[:2]
    op = GpuDockerOperator(
        task_id="t",
        image=image,
        command=py(CODE),
        env={"SLEEP": sleep},
        retries=int(retries),
        mounts=[{"target": "/markers", "source": markers, "type": "bind"}],
        resources={"gpus": 1},
        host_gpus=1,
        mount_tmp_dir=False,
        stop_grace_period=int(grace),
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    print("executing", flush=True)
    print("result", op.execute(make_context(dag_id)), flush=True)


if __name__ == "__main__":
    main()
