"""Distinct devices for parallel GPU tasks on one host declared with 4 GPUs; extra tasks wait.

Real parallelism comes from separate OS processes, one per map index, each running the
operator's ``execute`` as a worker would (``python -m tests.integration.docker._worker``);
no scheduler is involved. The processes share the lease directory, as the workers of one host
do. Each container reports its ``NVIDIA_VISIBLE_DEVICES`` (set by the stand-in NVIDIA hook)
and the times it started and ended, read from the container's own clock.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, airflow_env
from tests.integration.docker.conftest import task_containers, unique_dag_id

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def _run_workers(dag_id: str, image: str, count: int, sleep: float, sync_dir) -> list[dict]:
    sync_dir.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.docker._worker",
                dag_id,
                str(i),
                image,
                str(sleep),
                str(sync_dir),
                "4",
                str(count),
            ],
            cwd=REPO_ROOT,
            env=airflow_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        result["log"] = out + err
        results.append(result)
    return results


def _overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_four_tasks_run_at_once_on_four_distinct_devices(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("par4")
    # Each container waits (at most 120 s) until all four have started, then holds 1 s more.
    results = _run_workers(dag_id, base_image, 4, sleep=1, sync_dir=tmp_path / "sync")
    devices = [r["devices"] for r in results]
    assert sorted(devices) == ["0", "1", "2", "3"]
    # All four ran at the same time: the latest start is before the earliest end.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert not any("Waiting for" in r["log"] for r in results)
    assert task_containers(cli, dag_id) == []


def test_six_tasks_never_share_a_device_and_the_extra_ones_wait(base_image, cli, lease_dir, tmp_path):
    dag_id = unique_dag_id("par6")
    # The first four wait for each other, so the last two find every device leased.
    results = _run_workers(dag_id, base_image, 6, sleep=2, sync_dir=tmp_path / "sync")
    assert all(r["devices"] in {"0", "1", "2", "3"} for r in results)
    for a, b in itertools.combinations(results, 2):
        if _overlap(a, b):
            assert a["devices"] != b["devices"], (a, b)
    # Never more than 4 containers at once, and two tasks had to wait for a device.
    for r in results:
        running_then = [o for o in results if o["start"] <= r["start"] < o["end"]]
        assert len(running_then) <= 4
    waited = [r for r in results if "Waiting for 1 free GPU device(s)" in r["log"]]
    assert len(waited) >= 2
    # A waiting task's container started only after another one on its device had ended.
    for r in waited:
        earlier = [
            o for o in results if o is not r and o["devices"] == r["devices"] and o["start"] < r["start"]
        ]
        assert earlier
        assert all(o["end"] <= r["start"] for o in earlier)
    assert task_containers(cli, dag_id) == []
