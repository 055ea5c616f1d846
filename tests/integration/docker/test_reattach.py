"""Reattach: a retry after a dead worker collects the container's result, never starts a second one.

The first try is a real ``airflow tasks test`` process killed with SIGKILL (no cleanup can run),
so its container keeps running. The rerun is a real ``airflow tasks test`` process of the same
task instance (same run id, so the same deterministic container name). Engine events show how
many containers of the task started.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.conftest import VENV_BIN, airflow_env
from tests.integration.docker.conftest import (
    make_context,
    remove_all,
    task_containers,
    unique_dag_id,
    wait_for_running,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

#: ``airflow tasks test`` finds the run it created by its logical date on the second call
#: (a run-id string would give a fresh temporary run each time).
LOGICAL_DATE = "2025-03-01T00:00:00+00:00"
CODE = (
    "import json, os, time; print('training', flush=True); "
    # Runs until the test says go (or SLEEP seconds), so the rerun surely finds it running.
    "deadline = time.time() + float(os.environ['SLEEP']); "
    "exec('while not os.path.exists(\\'/tmp/go\\') and time.time() < deadline: time.sleep(0.2)'); "
    "json.dump({'trained': True, 'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES')}, "
    "open('/airflow/xcom/return.json', 'w')); print('done', flush=True)"
)

DAG = """
from __future__ import annotations
import pendulum
from airflow.sdk import dag
from airflow_mlops_provider.operators.docker import GpuDockerOperator

@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def d():
    GpuDockerOperator(task_id="t", image="{image}", command=["python3", "-c", {code!r}],
                      env={{"SLEEP": "{sleep}"}}, resources={{"gpus": 1}}, host_gpus=4, mount_tmp_dir=False)
d()
"""


def _start_events(cli, dag_id: str, since: int) -> list[dict]:
    events = cli.events(
        since=since,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "start", "label": f"airflow-mlops.dag_id={dag_id}"},
    )
    return list(events)


def _dag_folder(tmp_path, dag_id: str, image: str, *, sleep: int):
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "d.py").write_text(DAG.format(dag_id=dag_id, image=image, code=CODE, sleep=sleep))
    return folder


def _kill_first_try(cli, dag_id: str, folder, run_id: str) -> None:
    proc = subprocess.Popen(
        [str(VENV_BIN / "airflow"), "tasks", "test", dag_id, "t", run_id],
        env=airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_running(cli, dag_id, timeout=300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def test_rerun_after_sigkill_reattaches_to_the_running_container(
    base_image, cli, lease_dir, airflow_db, tmp_path
):
    dag_id = unique_dag_id("reattach")
    # The container runs until the test says go (at most 240 s), so the rerun finds it running.
    folder = _dag_folder(tmp_path, dag_id, base_image, sleep=240)
    since = int(time.time()) - 1
    try:
        _kill_first_try(cli, dag_id, folder, LOGICAL_DATE)
        (survivor,) = task_containers(cli, dag_id)
        assert survivor["State"] == "running"  # the killed worker could not clean up
        rerun = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "tasks", "test", dag_id, "t", LOGICAL_DATE],
            env=airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in rerun.stdout:
            lines.append(line)
            if "Reattaching to container" in line:
                # Only now let the training finish.
                exec_id = cli.exec_create(survivor["Id"], ["touch", "/tmp/go"])
                cli.exec_start(exec_id)
        rerun.wait(timeout=300)
        output = "".join(lines)
        assert rerun.returncode == 0, output[-5000:]
        assert "Reattaching to container" in output
        assert "state running" in output
        assert "done" in output  # the rest of its output streamed into the rerun's log
        starts = _start_events(cli, dag_id, since)
        assert len(starts) == 1, starts  # no second training run started
        assert starts[0]["id"] == survivor["Id"]
        assert task_containers(cli, dag_id) == []  # collected, then removed
        db = sqlite3.connect(str(airflow_db / "airflow.db"))
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 't' AND key = 'return_value'", (dag_id,)
        ).fetchone()
        db.close()
        assert json.loads(value)["trained"] is True  # the result was collected as the XCom
    finally:
        remove_all(cli, dag_id)


def test_rerun_collects_the_result_of_a_container_that_already_finished(
    base_image, cli, lease_dir, airflow_db, tmp_path
):
    dag_id = unique_dag_id("reattach_done")
    folder = _dag_folder(tmp_path, dag_id, base_image, sleep=1)
    since = int(time.time()) - 1
    try:
        _kill_first_try(cli, dag_id, folder, LOGICAL_DATE)
        cli.wait(task_containers(cli, dag_id)[0]["Id"], timeout=60)
        (finished,) = task_containers(cli, dag_id)
        assert finished["State"] == "exited"
        # The rerun, in this process: the same task instance identity gives the same container name.
        op = GpuDockerOperator(
            task_id="t",
            image=base_image,
            command=["python3", "-c", CODE],
            env={"SLEEP": "1"},
            resources={"gpus": 1},
            host_gpus=4,
            mount_tmp_dir=False,
        )
        result = op.execute(make_context(dag_id, run_id=_run_id_of(finished)))
        assert result["trained"] is True
        assert len(result["devices"].split(",")) == 1
        assert len(_start_events(cli, dag_id, since)) == 1
        assert task_containers(cli, dag_id) == []
    finally:
        remove_all(cli, dag_id)


def _run_id_of(container: dict) -> str:
    return container["Labels"]["airflow-mlops.run_id"]


def test_events_helper_sees_starts(cli, base_image):
    # Guard for the assertion above: the events filter by label does report starts.
    name = f"events-probe-{int(time.time() * 1000)}"
    since = int(time.time()) - 1
    container = cli.create_container(base_image, ["true"], name=name, labels={"airflow-mlops.dag_id": name})
    try:
        cli.start(container["Id"])
        cli.wait(container["Id"])
        assert len(_start_events(cli, name, since)) == 1
    finally:
        cli.remove_container(container["Id"], force=True)
