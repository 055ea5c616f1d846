"""Live: the example GPU DAG runs on the cluster in KUBECONFIG; the GPU inventory reads its nodes."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from tests.conftest import REPO_ROOT, dags_test

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes_live]

DAG_FILE = REPO_ROOT / "dags" / "mlops_gpu_container.py"


def _conn(kubeconfig: str) -> str:
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": kubeconfig}})


def test_gpu_inventory_reads_the_cluster_nodes(kubeconfig):
    from airflow_mlops_provider.hooks.kubernetes import GpuKubernetesHook

    hook = GpuKubernetesHook(config_file=kubeconfig)
    nodes = hook.list_nodes()
    assert nodes, "the cluster lists no nodes"
    inventory = hook.gpu_inventory()
    assert set(inventory) == {"nodes", "by_product", "by_resource", "total"}
    assert inventory["total"] == sum(inventory["by_resource"].values())
    assert {n["name"] for n in inventory["nodes"]} <= {n.metadata.name for n in nodes}


def test_example_dag_runs_on_kubernetes(kubeconfig, namespace, airflow_db, dags_folder):
    shutil.copy(DAG_FILE, dags_folder / DAG_FILE.name)
    gpus = int(os.environ.get("MLOPS_LIVE_GPUS", "0"))
    conf = {"gpus_per_trial": gpus, "namespace": namespace, "steps": 100}
    if os.environ.get("MLOPS_EXAMPLE_IMAGE"):
        conf["image"] = os.environ["MLOPS_EXAMPLE_IMAGE"]
    proc = dags_test(
        "mlops_gpu_container",
        dags_folder,
        conf=json.dumps(conf),
        extra_env={
            "AIRFLOW__MLOPS__RUNTIME": "kubernetes",
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": _conn(kubeconfig),
            "PYTHONPATH": str(REPO_ROOT),
        },
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert "KubernetesContainerOperator" in out, out[-4000:]
    assert re.search(r"trial [0-9a-f]{16}: lr=\S+ loss=\S+ on (cpu|gpu)", out), out[-4000:]
    assert re.search(r"Best trial [0-9a-f]{16}: loss=\S+ \(4 of 4 trials succeeded\)", out), out[-4000:]
    if gpus:
        assert "on gpu" in out, out[-4000:]
    assert "state=success" in out, out[-4000:]

    # The pods were deleted when they finished (on_finish_action="delete_pod").
    from airflow_mlops_provider.hooks.kubernetes import GpuKubernetesHook

    left = GpuKubernetesHook(config_file=kubeconfig).core_v1_client.list_namespaced_pod(
        namespace, label_selector="dag_id=mlops_gpu_container"
    )
    assert [p.metadata.name for p in left.items if p.status.phase in ("Pending", "Running")] == []
