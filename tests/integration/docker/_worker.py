"""One worker process running one map index of a GPU task (used by test_parallel.py).

Usage: python -m tests.integration.docker._worker DAG_ID MAP_INDEX IMAGE SLEEP SYNC_DIR BARRIER ARRIVALS
Prints the task's result (the container's return.json) as JSON on the last line.

The worker marks its arrival in SYNC_DIR just before ``execute`` (which then asks for a GPU).
The container marks itself started (SYNC_DIR is bind-mounted at /sync) and waits, at most
120 s, until BARRIER containers have started and ARRIVALS workers have arrived, then holds its
GPU for SLEEP seconds. So however slowly worker processes start on a loaded machine, the first
BARRIER tasks surely overlap, and every extra worker asks for a GPU while all are leased.
"""

from __future__ import annotations

import json
import sys

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import make_context, py

CODE = (
    "import json, os, time\n"
    "start = time.time()\n"
    "open('/sync/started-' + os.environ['I'], 'w').close()\n"
    "def count(prefix):\n"
    "    return sum(name.startswith(prefix) for name in os.listdir('/sync'))\n"
    "while (count('started-') < int(os.environ['BARRIER']) or count('arrived-') < int(os.environ['ARRIVALS'])) \\\n"
    "        and time.time() < start + 120:\n"
    "    time.sleep(0.05)\n"
    "time.sleep(float(os.environ['SLEEP']))\n"
    "json.dump({'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES'), 'i': os.environ['I'],\n"
    "           'start': start, 'end': time.time()}, open('/airflow/xcom/return.json', 'w'))\n"
)


def main() -> None:
    dag_id, map_index, image, sleep, sync_dir, barrier, arrivals = sys.argv[1:8]
    op = GpuDockerOperator(
        task_id="train",
        image=image,
        command=py(CODE),
        env={"SLEEP": sleep, "I": map_index, "BARRIER": barrier, "ARRIVALS": arrivals},
        mounts=[{"target": "/sync", "source": sync_dir, "type": "bind"}],
        resources={"gpus": 1},
        host_gpus=4,
        mount_tmp_dir=False,
    )
    with open(f"{sync_dir}/arrived-{map_index}", "w"):
        pass
    result = op.execute(make_context(dag_id, task_id="train", run_id="sweep", map_index=int(map_index)))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
