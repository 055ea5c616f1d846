"""The waiting marker: a task polling for GPU devices holds an flock'd ``waiting-*.json`` until it stops."""

from __future__ import annotations

import json
import threading

import pytest

from airflow_mlops_provider.docker_gpu.leases import (
    acquire_gpu_lease,
    lease_dir_for_host,
    lock_is_held,
    read_host_leases,
)

HOST = "unix://var/run/docker.sock"
TASK = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": "4"}


def test_the_marker_lives_exactly_while_the_task_waits(tmp_path):
    directory = lease_dir_for_host(HOST, tmp_path)
    held = acquire_gpu_lease(HOST, ["0", "1"], count=2, lease_dir=tmp_path, owner="holder", timeout=0)
    seen: list[list[dict]] = []

    def busy() -> set[str]:
        waiting = read_host_leases(directory)["waiting"]
        seen.append(waiting)  # type: ignore[arg-type]
        if len(seen) == 5:
            threading.Thread(target=held.release).start()
        return set()

    lease = acquire_gpu_lease(
        HOST,
        ["0", "1"],
        count=1,
        lease_dir=tmp_path,
        owner="waiter",
        task=TASK,
        busy=busy,
        poll_interval=0.02,
    )
    try:
        assert seen[0] == []  # the first attempt has not waited yet
        marker = next(w for w in seen if w)[0]
        assert marker["owner"] == "waiter"
        assert marker["count"] == 1
        assert marker["devices"] == ["0", "1"]
        assert marker["task"] == TASK
        assert marker["host"] == HOST
        assert read_host_leases(directory)["waiting"] == []
        assert list(directory.glob("waiting-*")) == []
        record = read_host_leases(directory)["devices"][lease.device_ids[0]]
        assert record["owner"] == "waiter"
        assert record["task"] == TASK
        assert record["devices"] == lease.device_ids
    finally:
        lease.release()


def test_the_marker_is_removed_when_the_wait_times_out(tmp_path):
    directory = lease_dir_for_host(HOST, tmp_path)
    held = acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, timeout=0)
    seen: list[dict] = []

    def busy() -> set[str]:
        seen.extend(read_host_leases(directory)["waiting"])  # type: ignore[arg-type]
        return set()

    with pytest.raises(TimeoutError, match=r"^no 1 free GPU device\(s\) of \['0'\]"):
        acquire_gpu_lease(
            HOST, ["0"], count=1, lease_dir=tmp_path, owner="me", busy=busy, timeout=0.3, poll_interval=0.05
        )
    held.release()
    assert {w["owner"] for w in seen} == {"me"}
    assert list(directory.glob("waiting-*")) == []


def test_stale_markers_and_released_leases_are_ignored(tmp_path):
    directory = lease_dir_for_host(HOST, tmp_path)
    (directory / "waiting-deadbeefdeadbeef.json").write_text(json.dumps({"owner": "gone", "count": 1}))
    acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, owner="old", timeout=0).release()
    assert not lock_is_held(directory / "gpu-0.lock")
    assert not lock_is_held(directory / "missing.lock")
    assert read_host_leases(directory) == {"devices": {"0": None}, "waiting": []}
    assert not (directory / "missing.lock").exists()  # probing creates nothing
    assert read_host_leases(tmp_path / "no-such-dir") == {"devices": {}, "waiting": []}
