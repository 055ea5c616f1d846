"""Kills leave no container behind: SIGTERM mid-run, execution_timeout, non-zero exit (x20 each).

The 20-repetition loops run the operator in this process so they stay fast: SIGTERM is a real
signal sent to this process, handled as Airflow's task runner handles it (its handler calls
``task.on_kill()`` and returns); ``execution_timeout`` goes through the task runner's own
``_run_execute_callable`` (SIGALRM timeout, then ``on_kill``). One more SIGTERM case kills a
real ``airflow tasks test`` process.
"""

from __future__ import annotations

import datetime
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_mlops_provider.exceptions import ContainerFailedError
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.conftest import VENV_BIN, airflow_env
from tests.integration.docker.conftest import (
    make_context,
    py,
    task_containers,
    unique_dag_id,
    wait_for_running,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPETITIONS = 20
LONG = py("import time; print('started', flush=True); time.sleep(60)")


def _operator(image: str, command, **kwargs) -> GpuDockerOperator:
    return GpuDockerOperator(
        task_id="t",
        image=image,
        command=command,
        resources={"gpus": 1},
        host_gpus=4,
        mount_tmp_dir=False,
        stop_grace_period=0,
        **kwargs,
    )


def _sigterm_main_thread_when_running(cli, dag_id: str) -> None:
    wait_for_running(cli, dag_id)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


def test_sigterm_mid_run_leaves_no_container(base_image, cli, lease_dir):
    dag_id = unique_dag_id("kill_term")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        for rep in range(REPETITIONS):
            op = _operator(base_image, LONG)
            # What Airflow's task runner installs: on SIGTERM, call on_kill() and return.
            signal.signal(signal.SIGTERM, lambda signum, frame, op=op: op.on_kill())
            # The signal is delivered to the main thread, as to a single-threaded task process.
            killer = threading.Thread(target=_sigterm_main_thread_when_running, args=(cli, dag_id))
            killer.start()
            with pytest.raises(AirflowException, match="was stopped because the task was killed"):
                op.execute(make_context(dag_id, run_id=f"r{rep}"))
            killer.join()
            assert task_containers(cli, dag_id) == [], f"orphan after SIGTERM, repetition {rep}"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(lease_dir.rglob("*.lock")), "leases were taken"


def test_execution_timeout_leaves_no_container(base_image, cli, lease_dir):
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.task_runner import _run_execute_callable

    dag_id = unique_dag_id("kill_timeout")
    for rep in range(REPETITIONS):
        op = _operator(base_image, LONG, execution_timeout=datetime.timedelta(seconds=2))
        with pytest.raises(AirflowTaskTimeout):
            _run_execute_callable(make_context(dag_id, run_id=f"r{rep}"), op.execute, op)
        assert task_containers(cli, dag_id) == [], f"orphan after timeout, repetition {rep}"


def test_non_zero_exit_leaves_no_container_and_reports_output(base_image, cli, lease_dir):
    dag_id = unique_dag_id("kill_exit")
    for rep in range(REPETITIONS):
        op = _operator(base_image, ["sh", "-c", "echo boom; exit 3"])
        with pytest.raises(
            ContainerFailedError, match=r"exited with code 3\n--- last container output ---\nboom"
        ):
            op.execute(make_context(dag_id, run_id=f"r{rep}"))
        assert task_containers(cli, dag_id) == [], f"orphan after exit 3, repetition {rep}"


SIGTERM_DAG = """
from __future__ import annotations
import pendulum
from airflow.sdk import dag
from airflow_mlops_provider.operators.docker import GpuDockerOperator

@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def d():
    GpuDockerOperator(task_id="t", image="{image}", command={command!r}, resources={{"gpus": 1}},
                      host_gpus=4, mount_tmp_dir=False, stop_grace_period=0)
d()
"""


def test_sigterm_to_a_real_task_process_leaves_no_container(base_image, cli, lease_dir, airflow_db, tmp_path):
    dag_id = unique_dag_id("kill_proc")
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "d.py").write_text(SIGTERM_DAG.format(dag_id=dag_id, image=base_image, command=LONG))
    proc = subprocess.Popen(
        [str(VENV_BIN / "airflow"), "tasks", "test", dag_id, "t", "sigterm-run"],
        env=airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_running(cli, dag_id, timeout=300)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert task_containers(cli, dag_id) == [], output[-4000:]
    assert "Task killed: stopping container" in output
    shutil.rmtree(folder, ignore_errors=True)
    assert Path(lease_dir).exists()
