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
    lines = re.findall(r"trial ([0-9a-f]{16}): lr=(\S+) loss=\S+ on (cpu|gpu), /dev/shm (\d+) bytes", out)
    trials = {tid: (float(lr), int(shm)) for tid, lr, _, shm in lines}
    assert len(trials) == 4, out[-4000:]  # 2 learning rates x 2 per-trial sizes, one container each
    # /dev/shm was sized per trial (shm_size in each trial's resources).
    assert sorted(trials.values()) == [(0.05, 67108864), (0.05, 134217728), (0.2, 67108864), (0.2, 134217728)]
    # select_best_trial ranked them by loss: the larger learning rate converges within 150 steps.
    best = re.search(r"Best trial ([0-9a-f]{16}): loss=\S+ \(4 of 4 trials succeeded\)", out)
    assert best, out[-4000:]
    assert trials[best[1]][0] == 0.2, out[-4000:]
    assert "state=success" in out, out[-4000:]
