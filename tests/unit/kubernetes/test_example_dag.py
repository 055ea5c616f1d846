"""The example DAG dags/mlops_gpu_container.py, parsed with runtime=kubernetes, renders valid pods.

The same file runs on Docker in tests/integration/container. Here a real DAG run (``dag.test()``)
runs ``plan_sweep`` for real, expands the mapped container trials over its batches and renders
every trial's pod through KubernetesPodOperator's pod builder; only the cluster calls are left out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from tests.conftest import REPO_ROOT
from tests.unit.kubernetes.conftest import PodRecorder, kube_conn, record_pods_execute

DAG_FILE = REPO_ROOT / "dags" / "mlops_gpu_container.py"


def _load_dag(path: Path):
    spec = importlib.util.spec_from_file_location("mlops_gpu_container_k8s_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mlops_gpu_container()


@pytest.fixture(scope="module")
def k8s_run(airflow_db, kube_env):
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    copy = dags_folder / DAG_FILE.name
    shutil.copy(DAG_FILE, copy)
    rec = PodRecorder()
    env = {"AIRFLOW__MLOPS__RUNTIME": "kubernetes", "AIRFLOW_CONN_KUBERNETES_DEFAULT": kube_conn(kube_env)}
    with (
        mock.patch.dict("os.environ", env),
        mock.patch.object(GpuKubernetesPodOperator, "execute", record_pods_execute(rec)),
    ):
        dag = _load_dag(DAG_FILE)
        try:
            dag_run = dag.test(
                run_conf={"gpus_per_trial": 1, "namespace": "ml-train"},
                mark_success_pattern="select_best_trial",
            )
        finally:
            copy.unlink()  # other tests parse the shared DAGs folder
    return dag, dag_run, rec


def test_example_dag_uses_the_kubernetes_operator(k8s_run):
    dag, dag_run, rec = k8s_run
    assert type(dag.task_dict["trial"]).__name__ == "MappedOperator"
    assert dag.task_dict["trial"].operator_class.__name__ == "ContainerTrialOperator"
    assert dag.task_dict["trial"].partial_kwargs["runtime"] == "kubernetes"
    assert dag_run.state == "success", rec.errors


def test_example_dag_renders_a_valid_pod_per_trial(k8s_run):
    import json

    from kubernetes.client import ApiClient

    _, _, rec = k8s_run
    assert sorted(rec.pods) == [("trial", i) for i in range(4)]  # 2 learning rates x 2 sizes
    seen = []
    for map_index in range(4):
        pod = rec.pod("trial", map_index)
        base = pod.spec.containers[0]
        env = {e.name: e.value for e in base.env}
        trial = json.loads(env["MLOPS_TRIAL"])
        assert base.name == "base"
        assert base.image == "mlops-base:bookworm"
        assert base.args[:2] == ["python3", "-c"]
        assert "MLOPS_TRIAL" in base.args[2]
        assert env["MLOPS_TRIAL_ID"] == trial["trial_id"]
        assert env["LR"] == str(trial["hparams"]["lr"])  # {{ trial.hparams.lr }}, rendered per trial
        assert pod.metadata.namespace == "ml-train"
        assert pod.metadata.labels["map_index"] == str(map_index)
        assert base.image_pull_policy == "IfNotPresent"
        assert base.resources.limits["nvidia.com/gpu"] == "1"  # gpus_per_trial=1 from the run's conf
        assert [t.key for t in pod.spec.tolerations] == ["nvidia.com/gpu"]
        shm = [v for v in pod.spec.volumes if v.name == "mlops-dshm"]
        assert shm[0].empty_dir.medium == "Memory"
        assert pod.spec.containers[1].name == "airflow-xcom-sidecar"
        seen.append((trial["hparams"]["lr"], base.resources.limits["memory"], shm[0].empty_dir.size_limit))
        # What the API server would receive: camelCase JSON that deserialises back to the same pod.
        body = ApiClient().sanitize_for_serialization(pod)
        assert body["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert body["spec"]["restartPolicy"] == "Never"
    # Every learning rate with both per-trial sizes from the search space's resources entry.
    assert sorted(seen) == [
        (0.05, "256Mi", "64Mi"),
        (0.05, "512Mi", "128Mi"),
        (0.2, "256Mi", "64Mi"),
        (0.2, "512Mi", "128Mi"),
    ]
