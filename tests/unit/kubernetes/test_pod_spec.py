"""Pod specs built by GpuKubernetesPodOperator through KubernetesPodOperator's real pod builder.

One real DAG run (``dag.test()``, real rendering with the run's context, real mapping) builds
every pod; only ``execute`` is replaced so that nothing is sent to a cluster.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import pendulum
import pytest

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from tests.unit.kubernetes.conftest import PodRecorder, kube_conn, record_pods_execute

DAG_ID = "mlops_k8s_pod_specs"
IMAGE = "registry.example.com/train:1.0"
PARAM_RESOURCES = {"cpus": 3, "memory": "6Gi", "gpus": 1, "gpu_type": "NVIDIA-L4", "shm_size": "512Mi"}
TRIALS = [
    {"resources": {"cpus": 1, "memory": "1Gi"}, "command": ["python3", "-c", "print('a')"]},
    {
        "resources": {"cpus": 4, "memory": "16Gi", "gpus": 2, "gpu_type": "NVIDIA-H100-80GB-HBM3"},
        "command": ["python3", "-c", "print('b')"],
    },
]


def _build_dag():
    from airflow.sdk import DAG, Param

    with DAG(
        DAG_ID,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        params={"resources": Param(PARAM_RESOURCES, type="object"), "lr": Param(0.01, type="number")},
    ) as dag:
        common = {"image": IMAGE, "namespace": "mlops"}
        GpuKubernetesPodOperator(
            task_id="cpu_only",
            command=["python3", "train.py"],
            resources={"cpus": 1, "memory": "512Mi", "gpus": 0},
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="two_gpus_typed",
            command="python3 train.py --epochs 3 --name 'big run'",
            resources={"cpus": 8, "memory": "32Gi", "gpus": 2, "gpu_type": "NVIDIA-A100-SXM4-80GB"},
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="amd_gpu",
            command=["python3", "train.py"],
            resources={"gpus": 1, "gpu_vendor": "amd", "gpu_type": "AMD-Instinct-MI300X"},
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="shm_only",
            command=["python3", "train.py"],
            resources={"cpus": 2, "shm_size": "2Gi"},
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="from_params",
            command=["python3", "train.py", "--lr", "{{ params.lr }}"],
            env={"RUN_ID": "{{ run_id }}", "EPOCHS": 3, "TRY": "{{ ti.try_number }}"},
            resources="{{ params.resources | tojson }}",
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="custom_label_and_tolerations",
            command=["python3", "train.py"],
            resources={"gpus": 1, "gpu_type": "nvidia-tesla-t4"},
            gpu_type_label="cloud.google.com/gke-accelerator",
            gpu_tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists"},
            ],
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="kpo_args_kept",
            command=["--epochs", "3"],
            cmds=["/opt/entrypoint.sh"],
            env={"A": "from-env"},
            env_vars={"B": "from-env-vars"},
            labels={"team": "ml"},
            annotations={"owner": "ml-platform"},
            node_selector={"pool": "gpu"},
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]}
                                ]
                            }
                        ]
                    }
                }
            },
            tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
            resources={"gpus": 1, "gpu_type": "NVIDIA-L4", "shm_size": "1Gi"},
            service_account_name="trainer",
            **common,
        )
        GpuKubernetesPodOperator(
            task_id="deferrable_trial",
            command=["python3", "train.py"],
            resources={"gpus": 1},
            deferrable=True,
            poll_interval=7,
            **common,
        )
        GpuKubernetesPodOperator.partial(task_id="mapped_trial", **common).expand_kwargs(TRIALS)
        GpuKubernetesPodOperator.partial(
            task_id="mapped_shared_resources",
            resources=Resources(gpus=1, memory="2Gi", gpu_vendor="amd"),
            **common,
        ).expand(command=[["python3", "a.py"], ["python3", "b.py"]])
    return dag


@pytest.fixture(scope="module")
def recorder(airflow_db, kube_env):
    # dag.test() syncs the DAG from its bundle first, so the DAGs folder must hold the DAG too
    # (removed afterwards, so other tests that parse the shared DAGs folder never see it).
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_ID}.py"
    dag_file.write_text(
        "# airflow DAG (safe-mode discovery needs both words)\n"
        "from tests.unit.kubernetes.test_pod_spec import _build_dag\n\ndag = _build_dag()\n"
    )
    rec = PodRecorder()
    dag = _build_dag()
    with (
        mock.patch.object(GpuKubernetesPodOperator, "execute", record_pods_execute(rec)),
        mock.patch.dict("os.environ", {"AIRFLOW_CONN_KUBERNETES_DEFAULT": kube_conn(kube_env)}),
    ):
        try:
            dag_run = dag.test()
        finally:
            dag_file.unlink()
    assert dag_run.state == "success", rec.errors
    return rec


def _container(pod):
    (base,) = [c for c in pod.spec.containers if c.name == "base"]
    return base


def _gpu_keys(requirements) -> set[str]:
    keys = set((requirements.limits or {}) | (requirements.requests or {}))
    return {k for k in keys if k.endswith("/gpu")}


def test_gpus_zero_has_no_gpu_keys_at_all(recorder):
    pod = recorder.pod("cpu_only")
    res = _container(pod).resources
    assert res.requests == {"cpu": "1", "memory": "512Mi"}
    assert res.limits == {"cpu": "1", "memory": "512Mi"}
    assert _gpu_keys(res) == set()
    assert not pod.spec.tolerations
    assert not pod.spec.affinity
    assert [v.name for v in pod.spec.volumes] == ["xcom"]  # only KPO's XCom volume, no /dev/shm
    assert "nvidia" not in str(pod.to_dict())


def test_two_gpus_with_gpu_type(recorder):
    pod = recorder.pod("two_gpus_typed")
    res = _container(pod).resources
    assert res.limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert res.requests == res.limits
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    (term,) = terms.node_selector_terms
    (expr,) = term.match_expressions
    assert (expr.key, expr.operator, expr.values) == (
        "nvidia.com/gpu.product",
        "In",
        ["NVIDIA-A100-SXM4-80GB"],
    )
    (tol,) = pod.spec.tolerations
    assert (tol.key, tol.operator, tol.effect, tol.value) == ("nvidia.com/gpu", "Exists", "NoSchedule", None)
    # A string command is split like a shell does (as Docker does) and becomes the container's args.
    assert _container(pod).args == ["python3", "train.py", "--epochs", "3", "--name", "big run"]
    assert _container(pod).command == []


def test_amd_gpu(recorder):
    pod = recorder.pod("amd_gpu")
    res = _container(pod).resources
    assert res.limits == {"amd.com/gpu": "1"} == res.requests
    expr = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert expr.node_selector_terms[0].match_expressions[0].key == "amd.com/gpu.product-name"
    assert expr.node_selector_terms[0].match_expressions[0].values == ["AMD-Instinct-MI300X"]
    assert [(t.key, t.operator) for t in pod.spec.tolerations] == [("amd.com/gpu", "Exists")]


def test_shm_size_is_a_memory_empty_dir_at_dev_shm(recorder):
    pod = recorder.pod("shm_only")
    (shm,) = [v for v in pod.spec.volumes if v.name == "mlops-dshm"]
    assert shm.empty_dir.medium == "Memory"
    assert shm.empty_dir.size_limit == "2Gi"
    mounts = {m.mount_path: m.name for m in _container(pod).volume_mounts}
    assert mounts["/dev/shm"] == "mlops-dshm"
    assert mounts["/airflow/xcom"] == "xcom"
    assert _container(pod).resources.limits == {"cpu": "2"}
    assert not pod.spec.tolerations  # no GPU, no GPU toleration


def test_resources_command_and_env_rendered_from_dag_params(recorder):
    pod = recorder.pod("from_params")
    base = _container(pod)
    assert base.resources.limits == {"cpu": "3", "memory": "6Gi", "nvidia.com/gpu": "1"}
    expr = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert expr.node_selector_terms[0].match_expressions[0].values == ["NVIDIA-L4"]
    assert any(v.empty_dir and v.empty_dir.size_limit == "512Mi" for v in pod.spec.volumes)
    assert base.args == ["python3", "train.py", "--lr", "0.01"]
    env = {e.name: e.value for e in base.env}
    assert env["EPOCHS"] == "3"
    assert env["TRY"] == "1"
    (run_id,) = recorder.run_ids
    assert env["RUN_ID"] == run_id
    assert run_id.startswith("manual__")


def test_mapped_trial_resources_differ_per_map_index(recorder):
    first, second = recorder.pod("mapped_trial", 0), recorder.pod("mapped_trial", 1)
    assert _container(first).resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert _gpu_keys(_container(first).resources) == set()
    assert not first.spec.affinity
    assert not first.spec.tolerations
    assert _container(second).resources.limits == {
        "cpu": "4",
        "memory": "16Gi",
        "nvidia.com/gpu": "2",
    }
    expr = second.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert expr.node_selector_terms[0].match_expressions[0].values == ["NVIDIA-H100-80GB-HBM3"]
    assert _container(first).args == ["python3", "-c", "print('a')"]
    assert _container(second).args == ["python3", "-c", "print('b')"]
    assert (first.metadata.labels["map_index"], second.metadata.labels["map_index"]) == ("0", "1")


def test_labels_identify_dag_task_run_map_index_and_try(recorder):
    pod = recorder.pod("mapped_trial", 1)
    labels = pod.metadata.labels
    assert labels["dag_id"] == DAG_ID
    assert labels["task_id"] == "mapped_trial"
    assert labels["map_index"] == "1"
    assert labels["try_number"] == "1"
    assert labels["app.kubernetes.io/managed-by"] == "airflow-mlops-provider"
    # run_id holds ':' and '+', which labels cannot: KPO makes it a safe label value.
    (run_id,) = recorder.run_ids
    assert ":" in run_id
    assert ":" not in labels["run_id"]
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", labels["run_id"]), labels["run_id"]
    assert "map_index" not in recorder.pod("cpu_only").metadata.labels  # unmapped: KPO leaves it out


def test_custom_gpu_label_and_tolerations(recorder):
    pod = recorder.pod("custom_label_and_tolerations")
    expr = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert expr.node_selector_terms[0].match_expressions[0].key == "cloud.google.com/gke-accelerator"
    assert [(t.key, t.operator, t.value, t.effect) for t in pod.spec.tolerations] == [
        ("dedicated", "Equal", "gpu", "NoSchedule"),
        ("nvidia.com/gpu", "Exists", None, None),
    ]


def test_kpo_arguments_keep_working_and_merge(recorder):
    pod = recorder.pod("kpo_args_kept")
    base = _container(pod)
    assert base.command == ["/opt/entrypoint.sh"]
    assert base.args == ["--epochs", "3"]
    assert [(e.name, e.value) for e in base.env] == [
        ("A", "from-env"),
        ("B", "from-env-vars"),
        ("MLOPS_RESULT_FILE", "/airflow/xcom/return.json"),  # every runtime sets it
    ]
    assert pod.metadata.labels["team"] == "ml"
    assert pod.metadata.annotations == {"owner": "ml-platform"}
    assert pod.metadata.namespace == "mlops"
    assert pod.spec.node_selector == {"pool": "gpu"}
    assert pod.spec.service_account_name == "trainer"
    # The user's zone requirement and the GPU requirement are ANDed in the same term.
    (term,) = (
        pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    )
    assert [(e.key, e.values) for e in term.match_expressions] == [
        ("topology.kubernetes.io/zone", ["z1"]),
        ("nvidia.com/gpu.product", ["NVIDIA-L4"]),
    ]
    assert [t.key for t in pod.spec.tolerations] == ["spot", "nvidia.com/gpu"]
    assert {m.mount_path for m in base.volume_mounts} == {"/airflow/xcom", "/dev/shm"}
    # The XCom sidecar is there: the result comes from /airflow/xcom/return.json.
    assert [c.name for c in pod.spec.containers] == ["base", "airflow-xcom-sidecar"]


def test_deferrable_trigger_serialises(recorder):
    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger

    classpath, kwargs = recorder.triggers[("deferrable_trial", -1)]
    assert classpath == "airflow.providers.cncf.kubernetes.triggers.pod.KubernetesPodTrigger"
    pod = recorder.pod("deferrable_trial")
    assert kwargs["pod_name"] == pod.metadata.name
    assert kwargs["pod_namespace"] == "mlops"
    assert kwargs["poll_interval"] == 7
    assert kwargs["on_finish_action"] == "delete_pod"
    assert kwargs["on_kill_action"] == "delete_pod"
    # It round-trips: the triggerer rebuilds the same trigger from the serialized kwargs.
    rebuilt = KubernetesPodTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    # Not deferrable by default here: the others were not deferred.
    assert set(recorder.triggers) == {("deferrable_trial", -1)}


def test_resources_object_in_partial_survives_serialisation_and_maps(recorder):
    # dag.test() serialises the DAG; a Resources object in partial() must come back as ours.
    pods = [recorder.pod("mapped_shared_resources", i) for i in (0, 1)]
    assert [_container(p).args for p in pods] == [["python3", "a.py"], ["python3", "b.py"]]
    for pod in pods:
        assert _container(pod).resources.limits == {"memory": "2Gi", "amd.com/gpu": "1"}
        assert [t.key for t in pod.spec.tolerations] == ["amd.com/gpu"]
