"""GPU device leases: distinct devices, all-or-none, waiting, and reclaiming a dead holder's lease."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from airflow_mlops_provider.gpu_leases import acquire_gpu_lease, lease_dir_for_host, try_lease_ids

HOST = "unix://var/run/docker.sock"
INVENTORY = ["0", "1", "2", "3"]


def test_parallel_leases_get_distinct_devices(tmp_path):
    leases = [acquire_gpu_lease(HOST, INVENTORY, count=1, lease_dir=tmp_path, timeout=0) for _ in range(4)]
    assert sorted(i for lease in leases for i in lease.device_ids) == INVENTORY
    with pytest.raises(TimeoutError, match=r"^no 1 free GPU device\(s\) of \['0', '1', '2', '3'\]"):
        acquire_gpu_lease(HOST, INVENTORY, count=1, lease_dir=tmp_path, timeout=0)
    for lease in leases:
        lease.release()


def test_a_lease_takes_all_devices_or_none(tmp_path):
    held = acquire_gpu_lease(HOST, INVENTORY, count=3, lease_dir=tmp_path, timeout=0)
    with pytest.raises(TimeoutError):
        acquire_gpu_lease(HOST, INVENTORY, count=2, lease_dir=tmp_path, timeout=0.2, poll_interval=0.05)
    # The failed attempt kept nothing: the one free device can still be leased.
    (free,) = set(INVENTORY) - set(held.device_ids)
    single = acquire_gpu_lease(HOST, INVENTORY, count=1, lease_dir=tmp_path, timeout=0)
    assert single.device_ids == [free]
    held.release()
    single.release()


def test_explicit_ids_wait_for_exactly_those_devices(tmp_path):
    first = acquire_gpu_lease(HOST, INVENTORY, device_ids=["1", "3"], lease_dir=tmp_path, timeout=0)
    threading.Timer(0.3, first.release).start()
    started = time.monotonic()
    second = acquire_gpu_lease(HOST, INVENTORY, device_ids=["3"], lease_dir=tmp_path, poll_interval=0.05)
    assert second.device_ids == ["3"]
    assert time.monotonic() - started > 0.2  # it waited for the holder
    second.release()


def test_leases_are_per_host(tmp_path):
    a = acquire_gpu_lease("tcp://gpu-a:2376", ["0"], count=1, lease_dir=tmp_path, timeout=0)
    b = acquire_gpu_lease("tcp://gpu-b:2376", ["0"], count=1, lease_dir=tmp_path, timeout=0)
    assert a.device_ids == b.device_ids == ["0"]
    a.release()
    b.release()


def test_busy_devices_are_skipped(tmp_path):
    lease = acquire_gpu_lease(
        HOST, INVENTORY, count=2, lease_dir=tmp_path, busy=lambda: {"0", "2"}, timeout=0
    )
    assert lease.device_ids == ["1", "3"]
    lease.release()


def test_release_is_idempotent_and_frees_the_device(tmp_path):
    lease = acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, timeout=0)
    lease.release()
    lease.release()
    assert not lease.held
    acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, timeout=0).release()


def test_the_lease_of_a_killed_holder_is_reclaimed(tmp_path):
    code = (
        "import sys, time; from airflow_mlops_provider.gpu_leases import acquire_gpu_lease; "
        f"acquire_gpu_lease({HOST!r}, ['0'], count=1, lease_dir={str(tmp_path)!r}, timeout=0); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, timeout=0)
        holder.kill()  # SIGKILL: no cleanup code runs; the kernel drops the flock
        holder.wait(timeout=30)
        lease = acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=tmp_path, timeout=5, poll_interval=0.05)
        assert lease.device_ids == ["0"]
        assert '"pid"' in (lease_dir_for_host(HOST, tmp_path) / "gpu-0.lock").read_text()
        lease.release()
    finally:
        holder.kill()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 5}, "gpus=5 but host 'h' has only 4 GPU(s) ['0', '1', '2', '3']"),
        ({"count": 0}, "count must be an integer >= 1, got 0"),
        (
            {"device_ids": ["9"]},
            "gpu_ids ['9'] name device(s) ['9'] that host 'h' does not have (its GPUs: ['0', '1', '2', '3'])",
        ),
    ],
    ids=["too-many", "zero", "unknown-id"],
)
def test_impossible_requests_fail_at_once(tmp_path, kwargs, message):
    import re

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        acquire_gpu_lease("h", INVENTORY, lease_dir=tmp_path, **kwargs)


def test_try_lease_ids_returns_none_when_too_few_are_free(tmp_path):
    directory = lease_dir_for_host(HOST, tmp_path)
    held = try_lease_ids(HOST, ["0"], 1, lease_dir=directory)
    assert held is not None
    assert try_lease_ids(HOST, ["0", "1"], 2, lease_dir=directory) is None
    held.release()
