"""A try whose supervisor died keeps its container for the retry: one training run, one result (issue 18).

A SIGKILLed scheduler takes the LocalExecutor's supervisor processes with it, but not their task
processes (Airflow starts those in their own process group). Such a task process follows its
container to the end and cannot report the result; it used to remove the container anyway, so
the retry, once the scheduler had failed the silent try, trained again from scratch (the chaos
suite's "scheduler restarted (SIGKILL)" case: trainer started twice). Here the "supervisor" is a
shell that is SIGKILLed while the task runs; the second try, in this process, must reattach to
the kept container and return its result without starting the trainer again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.conftest import REPO_ROOT
from tests.integration.docker.conftest import (
    make_context,
    markers_dir,
    task_containers,
    unique_dag_id,
    wait_for_running,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _orphaned_first_try(cli, dag_id: str, image: str, markers: Path, retries: int, log: Path) -> None:
    command = (
        f"{sys.executable} -m tests.integration.docker._kill_worker {dag_id} {image} {markers} 3 6 {retries}"
        f" > {log} 2>&1; true"  # '; true': the shell forks the worker instead of exec'ing it
    )
    supervisor = subprocess.Popen(
        ["sh", "-c", command], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    )
    try:
        wait_for_running(cli, dag_id, timeout=120)
    finally:
        supervisor.send_signal(signal.SIGKILL)  # the supervisor dies; the task process does not
        supervisor.wait(timeout=30)
    deadline = time.monotonic() + 60
    while "result" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "result" in log.read_text(), log.read_text()[-3000:]


def test_retry_collects_the_container_of_an_orphaned_try(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("orphaned_try")
    markers = markers_dir(tmp_path)
    try:
        _orphaned_first_try(cli, dag_id, base_image, markers, retries=1, log=tmp_path / "try1.log")
        kept = task_containers(cli, dag_id)
        assert [c["State"] for c in kept] == ["exited"], (tmp_path / "try1.log").read_text()[-3000:]
        retry = GpuDockerOperator(
            task_id="t",
            image=base_image,
            command=["true"],  # never run: the retry reattaches
            resources={"gpus": 1},
            host_gpus=1,
            mount_tmp_dir=False,
            retries=1,
        )
        result = retry.execute(make_context(dag_id, try_number=2))
        assert result == {"done": True}
        assert len(list(markers.glob("started-*"))) == 1, "the retry trained again"
        assert task_containers(cli, dag_id) == []
    finally:
        for item in task_containers(cli, dag_id):
            cli.remove_container(item["Id"], force=True)


def test_without_a_retry_the_orphaned_try_removes_its_container(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("orphaned_last")
    try:
        _orphaned_first_try(
            cli, dag_id, base_image, markers_dir(tmp_path), retries=0, log=tmp_path / "try1.log"
        )
        assert task_containers(cli, dag_id) == [], "nobody would ever collect it"
    finally:
        for item in task_containers(cli, dag_id):
            cli.remove_container(item["Id"], force=True)
