"""One worker process running one map index of a GPU task (used by test_parallel.py).

Usage: python -m tests.integration.docker._worker DAG_ID MAP_INDEX IMAGE SLEEP
Prints the task's result (the container's return.json) as JSON on the last line.
"""

from __future__ import annotations

import json
import sys

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import RESULT_CODE, make_context, py


def main() -> None:
    dag_id, map_index, image, sleep = sys.argv[1:5]
    op = GpuDockerOperator(
        task_id="train",
        image=image,
        command=py(RESULT_CODE),
        env={"SLEEP": sleep, "I": map_index},
        resources={"gpus": 1},
        host_gpus=4,
        mount_tmp_dir=False,
    )
    result = op.execute(make_context(dag_id, task_id="train", run_id="sweep", map_index=int(map_index)))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
