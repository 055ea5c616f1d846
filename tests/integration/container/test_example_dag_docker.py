"""The example DAG dags/mlops_gpu_container.py runs to success on the Docker runtime.

The same file renders valid pods with runtime=kubernetes (tests/unit/kubernetes/test_example_dag.py)
and runs against a live cluster in tests/integration/kubernetes.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import REPO_ROOT, dags_test

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DAG_FILE = REPO_ROOT / "dags" / "mlops_gpu_container.py"


def test_example_dag_runs_on_docker_through_airflow_dags_test(airflow_db, base_image, dags_folder):
    shutil.copy(DAG_FILE, dags_folder / DAG_FILE.name)
    proc = dags_test(
        "mlops_gpu_container",
        dags_folder,
        conf=json.dumps({"image": base_image, "steps": 150}),
        extra_env={"AIRFLOW__MLOPS__RUNTIME": "docker", "PYTHONPATH": str(REPO_ROOT)},
    )
    out = proc.stdout + proc.stderr
    assert "DockerContainerOperator" in out, out[-4000:]
    assert "KubernetesContainerOperator" not in out
    trials = dict(re.findall(r"trial (\d): lr=\S+ loss=\S+ on (cpu|gpu)", out))
    assert sorted(trials) == ["0", "1"], out[-4000:]
    assert re.search(r"best trial 1 \(lr=0\.2\) loss=\S+ on (cpu|gpu)", out), out[-4000:]
    assert "state=success" in out, out[-4000:]
    # /dev/shm was sized per trial (shm_size in each trial's resources).
    assert "'shm_bytes': 134217728" in out, out[-4000:]
