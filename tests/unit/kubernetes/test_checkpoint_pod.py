"""Checkpoint pods, built by KubernetesPodOperator's real pod builder (no cluster needed)."""

from __future__ import annotations

import json
import types

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.checkpoints.kubernetes import (
    RESTORE_CONTAINER,
    SOURCE_ENV,
    SYNC_CONTAINER,
    VOLUME_NAME,
)
from airflow_mlops_provider.exceptions import CheckpointConfigError
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from airflow_mlops_provider.operators.kubernetes_checkpoint import PREFIX_ANNOTATION
from tests.unit.kubernetes.conftest import kube_conn

SECRET = "pod-spec-secret-9c2e"
RUN_ID = "manual__2026-12-02T10:00:00+00:00"


def _context(dag_id="ckpt_dag", task_id="train"):
    ti = types.SimpleNamespace(
        dag_id=dag_id, task_id=task_id, run_id=RUN_ID, map_index=-1, try_number=2, xcom_push=lambda **_: None
    )
    dag = types.SimpleNamespace(dag_id=dag_id)
    return {"ti": ti, "dag": dag, "run_id": RUN_ID, "task": types.SimpleNamespace(task_id=task_id)}


@pytest.fixture(autouse=True)
def _kube_conn(monkeypatch, kube_env):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", kube_conn(kube_env))


def _build(monkeypatch, kube_env, **kwargs):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CKPT_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAPODSPEC",
                "password": SECRET,
                "extra": {"endpoint_url": "http://minio.example:9000"},
            }
        ),
    )
    op = GpuKubernetesPodOperator(
        task_id="train",
        image="registry.example.com/train:1",
        command=["python", "train.py"],
        namespace="ml",
        **{
            "checkpoint": "s3://ckpt/team",
            "checkpoint_conn_id": "ckpt_s3",
            "checkpoint_interval": 30,
            "checkpoint_sync_image": "registry.example.com/ckpt-sync:1",
            "checkpoint_secret": "ckpt-credentials",
            **kwargs,
        },
    )
    return op, op.build_pod_request_obj(_context())


def test_pod_has_restore_init_container_native_sidecar_volume_and_env(monkeypatch, kube_env):
    from kubernetes.client import ApiClient

    op, pod = _build(monkeypatch, kube_env)
    spec = pod.spec
    names = [c.name for c in spec.init_containers]
    assert names == [RESTORE_CONTAINER, SYNC_CONTAINER]
    restore, sidecar = spec.init_containers
    assert restore.restart_policy is None
    assert sidecar.restart_policy == "Always"  # a native sidecar: runs beside the base container
    prefix = f"ckpt_dag/{RUN_ID.replace(':', '%3A').replace('+', '%2B')}/train/-1"
    assert restore.command[:2] == ["python3", "-c"]
    assert restore.command[3:] == [
        "restore",
        "--uri",
        "s3://ckpt/team",
        "--prefix",
        prefix,
        "--dir",
        "/mlops/checkpoint",
    ]
    assert sidecar.command[3:] == [
        "sidecar",
        "--uri",
        "s3://ckpt/team",
        "--prefix",
        prefix,
        "--dir",
        "/mlops/checkpoint",
        "--interval",
        "30",
    ]
    for container in (restore, sidecar):
        assert container.image == "registry.example.com/ckpt-sync:1"
        assert [m.mount_path for m in container.volume_mounts] == ["/mlops/checkpoint"]
        env = {e.name: e.value for e in container.env}
        assert env["AWS_ENDPOINT_URL"] == "http://minio.example:9000"
        assert env[SOURCE_ENV]
        assert [e.secret_ref.name for e in container.env_from] == ["ckpt-credentials"]
    (base,) = [c for c in spec.containers if c.name == "base"]
    assert {"name": VOLUME_NAME, "mount_path": "/mlops/checkpoint"}.items() <= {
        "name": base.volume_mounts[-1].name,
        "mount_path": base.volume_mounts[-1].mount_path,
    }.items()
    assert {e.name: e.value for e in base.env}["MLOPS_CHECKPOINT_DIR"] == "/mlops/checkpoint"
    assert VOLUME_NAME in [v.name for v in spec.volumes if v.empty_dir is not None]
    assert pod.metadata.annotations[PREFIX_ANNOTATION] == prefix
    # No credential anywhere in the pod, nor in the operator's rendered fields.
    serialized = json.dumps(ApiClient().sanitize_for_serialization(pod))
    assert SECRET not in serialized
    assert "AKIAPODSPEC" not in serialized
    assert all(SECRET not in repr(getattr(op, field)) for field in op.template_fields)
    # Building twice gives the same pod (KPO rebuilds on reattach): fields were restored.
    assert op.init_containers == []
    again = op.build_pod_request_obj(_context())
    assert [c.name for c in again.spec.init_containers] == names


def test_sync_source_runs_without_our_package(monkeypatch, kube_env, tmp_path):
    """The shipped source is complete: the bootstrap's --help runs in a bare interpreter."""
    import subprocess
    import sys

    _, pod = _build(monkeypatch, kube_env)
    restore = pod.spec.init_containers[0]
    env = {e.name: e.value for e in restore.env}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", restore.command[2], "--help"],
        env={SOURCE_ENV: env[SOURCE_ENV]},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "restore,sidecar" in proc.stdout


def test_off_by_default_and_bad_values(monkeypatch, kube_env):
    monkeypatch.delenv("AIRFLOW__MLOPS__CHECKPOINT_URI", raising=False)
    plain = GpuKubernetesPodOperator(task_id="t", image="i:1", namespace="ml")
    assert not plain.build_pod_request_obj(_context()).spec.init_containers
    with pytest.raises(CheckpointConfigError, match="on the worker, not in the pod.*'/shared/ckpt'") as info:
        _build(monkeypatch, kube_env, checkpoint="/shared/ckpt")
    assert isinstance(info.value, AirflowFailException)
    monkeypatch.delenv("AIRFLOW__MLOPS__CHECKPOINT_SYNC_IMAGE", raising=False)
    with pytest.raises(CheckpointConfigError, match="checkpoint_sync_image"):
        _build(monkeypatch, kube_env, checkpoint_sync_image=None)
    with pytest.raises(ValueError, match="checkpoint_sync_image must be an image reference, got ''"):
        GpuKubernetesPodOperator(task_id="t", image="i:1", checkpoint="s3://bkt/p", checkpoint_sync_image="")
    with pytest.raises(ValueError, match="checkpoint: unsupported checkpoint URI scheme 'gs'"):
        GpuKubernetesPodOperator(task_id="t", image="i:1", checkpoint="gs://bkt/p")


def test_sync_containers_run_as_the_trainers_user_only(monkeypatch, kube_env):
    """The base container's user and group reach the sync containers; its privileges do not."""
    _, pod = _build(
        monkeypatch,
        kube_env,
        container_security_context={"runAsUser": 1000, "runAsGroup": 2000, "privileged": True},
    )
    (base,) = [c for c in pod.spec.containers if c.name == "base"]
    assert base.security_context["privileged"] is True
    for container in pod.spec.init_containers:
        context = container.security_context
        assert (context.run_as_user, context.run_as_group, context.privileged) == (1000, 2000, None)
    _, plain = _build(monkeypatch, kube_env)
    assert [c.security_context for c in plain.spec.init_containers] == [None, None]


def test_conn_credentials_do_not_reach_the_pod_and_a_warning_says_so(monkeypatch, kube_env, capsys):
    from kubernetes.client import ApiClient

    _, pod = _build(monkeypatch, kube_env, checkpoint_secret=None)
    logged = capsys.readouterr().out  # the task logger writes there
    assert "checkpoint_conn_id 'ckpt_s3' is used by the worker only" in logged
    for container in pod.spec.init_containers:
        assert container.env_from is None
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & {e.name for e in container.env}
    serialized = json.dumps(ApiClient().sanitize_for_serialization(pod))
    assert SECRET not in serialized
    assert SECRET not in logged


def test_a_rendered_bad_uri_fails_at_build_naming_it(monkeypatch, kube_env):
    op = GpuKubernetesPodOperator(
        task_id="train",
        image="i:1",
        namespace="ml",
        checkpoint="{{ params.ckpt }}",
        checkpoint_sync_image="sync:1",
    )
    for rendered, message in (
        ("gs://bkt/p", "'gs://bkt/p'"),
        ("s3://", "'s3://'"),
        ("relative/dir", "'relative/dir'"),
    ):
        op.checkpoint = rendered  # as Airflow leaves it after rendering
        with pytest.raises(AirflowFailException, match=message):
            op.build_pod_request_obj(_context())
    assert op.init_containers == []


def test_sync_sidecar_done_reads_the_pods_status():
    from kubernetes.client import models as k8s

    from airflow_mlops_provider.checkpoints.kubernetes import sync_sidecar_done

    def pod(phase, state, name=SYNC_CONTAINER):
        status = k8s.V1ContainerStatus(
            name=name, image="s:1", image_id="", ready=False, restart_count=0, state=state
        )
        return k8s.V1Pod(status=k8s.V1PodStatus(phase=phase, init_container_statuses=[status]))

    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    exited = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=0))
    waiting = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="PodInitializing"))
    assert sync_sidecar_done(pod("Running", running)) is False
    assert sync_sidecar_done(pod("Succeeded", running)) is False  # still uploading after the base exited
    assert sync_sidecar_done(pod("Running", exited)) is True
    assert sync_sidecar_done(pod("Pending", waiting)) is False
    assert sync_sidecar_done(pod("Failed", waiting)) is True  # never started, never will
    assert sync_sidecar_done(pod("Running", running, name=RESTORE_CONTAINER)) is True
    assert sync_sidecar_done(None) is True
