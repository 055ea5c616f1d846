"""GpuDockerOperator in a real DAG run: a GPU request served through the stand-in NVIDIA hook."""

from __future__ import annotations

import json

import pytest

from tests.smoke.conftest import run_smoke_dag

pytestmark = [pytest.mark.smoke, pytest.mark.integration, pytest.mark.docker]


def test_two_gpus_are_leased_and_the_result_file_is_the_xcom(airflow_db, base_image, tmp_path):
    out = tmp_path / "result.json"
    leases = tmp_path / "leases"
    leases.mkdir()
    run_smoke_dag(
        "smoke_gpu_docker",
        tmp_path,
        conf={"out": str(out)},
        extra_env={"AIRFLOW__MLOPS__GPU_LEASE_DIR": str(leases), "MLOPS_TEST_IMAGE": base_image},
    )
    result = json.loads(out.read_text())
    assert result["lr"] == "0.1"
    devices = (result["devices"] or "").split(",")
    assert len(devices) == 2, result
    assert len(set(devices)) == 2, result
    assert set(devices) <= {"0", "1", "2", "3"}, result
