"""A killed task's container goes even when Airflow SIGKILLs the task process first (issue 18).

Airflow's supervisor SIGTERMs a task marked failed/success and SIGKILLs it 5 s later. These
tests shorten that to a fraction of a second, against a real engine and a real worker process:

- SIGTERM while the container runs, then SIGKILL while ``on_kill`` still waits for the stop
  (the trainer ignores SIGTERM, so the stop takes its whole grace): before the reaper, the
  container stayed, running, with nobody left to remove it;
- SIGTERM while the task waits for a GPU lease (before any container exists), then the lease
  frees: before the fix, ``on_kill`` had nothing to stop, the task went on to create and start
  the container, and the SIGKILL left it running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_mlops_provider.docker_gpu.leases import lease_dir_for_host, try_lease_ids
from tests.conftest import REPO_ROOT
from tests.integration.docker.conftest import (
    DOCKER_URL,
    markers_dir,
    task_containers,
    unique_dag_id,
    wait_for_running,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _worker(dag_id: str, image: str, markers: Path, grace: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.docker._kill_worker",
            dag_id,
            image,
            str(markers),
            str(grace),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_gone(cli, dag_id: str, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = task_containers(cli, dag_id)
        if not left:
            return []
        time.sleep(0.5)
    return task_containers(cli, dag_id)


def test_sigkill_during_on_kill_leaves_no_container(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("reaper_stop")
    proc = _worker(dag_id, base_image, markers_dir(tmp_path), grace=3)
    try:
        wait_for_running(cli, dag_id, timeout=120)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # on_kill is inside its 3 s stop
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left = _wait_gone(cli, dag_id)
    finally:
        if proc.poll() is None:
            proc.kill()
        for item in task_containers(cli, dag_id):
            cli.remove_container(item["Id"], force=True)
    assert left == [], f"the container outlived its SIGKILLed task: {left}"


def test_sigterm_before_the_container_exists_starts_none(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("reaper_lease")
    markers = markers_dir(tmp_path)
    held = try_lease_ids(DOCKER_URL, ["0"], 1, lease_dir=lease_dir_for_host(DOCKER_URL))
    assert held is not None
    proc = _worker(dag_id, base_image, markers, grace=3)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "executing"
        deadline = time.monotonic() + 60
        while not list(lease_dir.rglob("waiting-*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(lease_dir.rglob("waiting-*.json")), "the task never waited for the GPU"
        proc.send_signal(signal.SIGTERM)  # marked failed while it waits: nothing to stop yet
        time.sleep(0.5)
        held.release()  # the GPU frees up before Airflow's SIGKILL
        time.sleep(4)
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=30)[0]
        left = _wait_gone(cli, dag_id)
    finally:
        held.release()
        if proc.poll() is None:
            proc.kill()
        for item in task_containers(cli, dag_id):
            cli.remove_container(item["Id"], force=True)
    assert left == [], f"container left after SIGKILL: {left}"
    assert not list(markers.glob("started-*")), (
        f"the killed task started its trainer anyway:\n{output[-3000:]}"
    )


def test_the_reaper_never_touches_a_later_try_s_container(base_image, cli):
    from airflow_mlops_provider.operators.docker_reaper import TRY_LABEL, reap

    name = f"mlops-reaper-later-{unique_dag_id('x')}"
    created = cli.create_container(base_image, command=["sleep", "60"], name=name, labels={TRY_LABEL: "3"})
    try:
        spec = {"name": name, "try_number": 2, "auto_remove": "force", "kept_name": f"{name}-try2"}
        assert reap(spec, cli) == "a later try's container"
        assert cli.inspect_container(created["Id"])["Name"] == f"/{name}"
        assert reap({**spec, "try_number": 3}, cli) == "removed"
        assert reap({**spec, "try_number": 3}, cli) == "gone"
    finally:
        for item in cli.containers(all=True, filters={"name": name}):
            cli.remove_container(item["Id"], force=True)
