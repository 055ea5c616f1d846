"""GpuDockerOperator inside one real DAG run (``airflow dags test``) against the real engine.

GPU assignment is seen through the stand-in NVIDIA hook (``NVIDIA_VISIBLE_DEVICES``); no
device is attached on this GPU-less engine.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import dags_test

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DAG_FILE = Path(__file__).parent / "dags" / "gpu_docker_it.py"
#: [mlops] docker_host_gpus of the run: the tasks without host_gpus see one L4 and one A100.
NAMED_HOST = {"0": "NVIDIA L4", "1": "NVIDIA A100-SXM4-80GB"}


@pytest.fixture(scope="module")
def dag_run(airflow_db: Path, base_image: str, tmp_path_factory: pytest.TempPathFactory, cli):
    """Run the DAG once; every test of this module reads what it left behind."""
    folder = tmp_path_factory.mktemp("gpu_docker_dags")
    shutil.copy(DAG_FILE, folder / DAG_FILE.name)
    leases = tmp_path_factory.mktemp("leases")
    out = folder / "collected.json"
    proc = dags_test(
        "gpu_docker_it",
        folder,
        conf=json.dumps({"out": str(out)}),
        extra_env={
            "AIRFLOW__MLOPS__GPU_LEASE_DIR": str(leases),
            "MLOPS_TEST_IMAGE": base_image,
            "AIRFLOW__MLOPS__DOCKER_HOST_GPUS": json.dumps(NAMED_HOST),
        },
        check=False,
    )
    kept = cli.containers(all=True, filters={"label": "airflow-mlops.dag_id=gpu_docker_it"})
    inspected = {c["Id"]: cli.inspect_container(c["Id"]) for c in kept}
    for item in kept:
        cli.remove_container(item["Id"], force=True)
    collected = json.loads(out.read_text()) if out.exists() else None
    db = sqlite3.connect(str(airflow_db / "airflow.db"))
    states = {
        (task_id, map_index): (state, try_number)
        for task_id, map_index, state, try_number in db.execute(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = 'gpu_docker_it'"
        )
    }
    db.close()
    return {
        "proc": proc,
        "output": proc.stdout + proc.stderr,
        "collected": collected,
        "kept": inspected,
        "states": states,
    }


def _collected(dag_run):
    assert dag_run["collected"] is not None, dag_run["output"][-8000:]
    return dag_run["collected"]


def test_gpus_2_sees_two_devices(dag_run):
    devices = _collected(dag_run)["two_gpus"]["devices"]
    assert len(devices.split(",")) == 2
    assert len(set(devices.split(","))) == 2


def test_gpu_ids_gives_exactly_those_devices(dag_run):
    assert _collected(dag_run)["exact_ids"]["devices"] == "1,3"


def test_result_file_is_the_xcom_of_each_map_index(dag_run):
    mapped = _collected(dag_run)["mapped"]
    assert [m["i"] for m in mapped] == ["0", "1", "2"]
    assert all(len(m["devices"].split(",")) == 1 for m in mapped)


def test_cpu_fallback_runs_without_gpus_and_warns(dag_run):
    assert _collected(dag_run)["cpu_fallback"] == {"devices": None, "i": None}
    assert "no NVIDIA GPU runtime is registered" in dag_run["output"]
    assert "Running on CPU instead because gpu_fallback='cpu'" in dag_run["output"]


def test_no_runtime_fails_without_retry_and_names_host_and_what_is_missing(dag_run):
    state, try_number = dag_run["states"][("no_runtime", -1)]
    assert state == "failed"
    assert try_number == 1  # retries=3, yet AirflowFailException is not retried
    assert re.search(
        r"Docker host 'unix://var/run/docker.sock' cannot serve gpus=1: no NVIDIA GPU runtime is "
        r"registered \(docker info lists runtimes \[.*\], none is 'nvidia'\)",
        dag_run["output"],
    )


def test_gpu_type_gets_the_device_of_that_type(dag_run):
    assert _collected(dag_run)["typed"]["devices"] == "1"


def test_a_gpu_type_the_host_lacks_fails_without_retry(dag_run):
    state, try_number = dag_run["states"][("wrong_type", -1)]
    assert (state, try_number) == ("failed", 1)  # retries=3, yet not retried
    assert (
        "Docker host 'unix://var/run/docker.sock' (GPUs from [mlops] docker_host_gpus) has 0 GPU(s) of "
        "type 'NVIDIA-H100-80GB-HBM3', fewer than gpus=1; its GPUs are "
        "{'0': 'NVIDIA L4', '1': 'NVIDIA A100-SXM4-80GB'}"
    ) in dag_run["output"]


def test_docker_inspect_shows_the_requested_limits(dag_run):
    (limits,) = [
        c for c in dag_run["kept"].values() if c["Config"]["Labels"]["airflow-mlops.task_id"] == "limits"
    ]
    host = limits["HostConfig"]
    assert limits["Name"].endswith("-try1")  # kept and renamed, so a rerun starts afresh
    assert host["Memory"] == 256 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["ShmSize"] == 64 * 1024**2
    (request,) = host["DeviceRequests"]
    assert request["Driver"] == "nvidia"
    assert request["Capabilities"] == [["gpu"]]
    assert len(request["DeviceIDs"]) == 1


def test_logs_stream_live_into_the_task_log(dag_run):
    stamps = {}
    for line in dag_run["output"].splitlines():
        match = re.match(r"^(\S+) \[info\s*\] (tick [12])\s", line)
        if match:
            stamps[match.group(2)] = match.group(1)
    assert set(stamps) == {"tick 1", "tick 2"}, dag_run["output"][-4000:]
    from datetime import datetime

    first, second = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00")) for k in ("tick 1", "tick 2"))
    # Logged while the container ran (1.5 s apart), not all at once at its end.
    assert (second - first).total_seconds() >= 1.0


def test_log_line_xcom_stays_available(dag_run):
    assert _collected(dag_run)["last_line"] == "last"


def test_no_container_is_left_behind(dag_run):
    # Only the one the DAG asked to keep.
    names = [c["Config"]["Labels"]["airflow-mlops.task_id"] for c in dag_run["kept"].values()]
    assert names == ["limits"]
