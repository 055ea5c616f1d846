"""One try of a checkpointed task, as Airflow's task runner runs it: ``python kill_driver.py '<json>'``.

SIGTERM calls ``on_kill()`` and returns (the task runner's handler); ``execution_timeout`` goes
through the task runner's own ``_run_execute_callable``. The last line printed is
``RESULT <json>`` or ``ERROR <type>: <message>``.
"""

from __future__ import annotations

import datetime
import json
import logging
import signal
import sys
import types


def main() -> int:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    common = {
        "task_id": "train",
        "checkpoint": spec["checkpoint"],
        "checkpoint_interval": spec["interval"],
        "checkpoint_conn_id": spec.get("conn_id"),
        "checkpoint_retention": spec.get("retention"),
        "env": spec["env"],
    }
    if spec.get("timeout"):
        common["execution_timeout"] = datetime.timedelta(seconds=spec["timeout"])
    if spec["runtime"] == "docker":
        from docker.types import Mount

        from airflow_mlops_provider.operators.docker import GpuDockerOperator

        op = GpuDockerOperator(
            image=spec["image"],
            command=["python3", "/work/trainer.py"],
            mounts=[Mount(target="/work", source=spec["work"], type="bind")],
            mount_tmp_dir=False,
            stop_grace_period=1,
            **common,
        )
    else:
        from airflow_mlops_provider.operators.local import LocalProcessOperator

        op = LocalProcessOperator(command=[sys.executable, f"{spec['work']}/trainer.py"], **common)
    ti = types.SimpleNamespace(
        dag_id=spec["dag_id"],
        task_id="train",
        run_id=spec["run_id"],
        map_index=-1,
        try_number=spec["try_number"],
        xcom_push=lambda key, value: None,
    )
    context = {"ti": ti}
    signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
    try:
        result = _run_execute_callable(context, op.execute, op)
    except BaseException as err:  # reported to the test, as the task runner would record it
        print(f"ERROR {type(err).__name__}: {err}", flush=True)
        return 1
    print(f"RESULT {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
