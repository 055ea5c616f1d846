"""The Kubernetes checkpoint containers, run for real: the exact commands of the built pod, in Docker.

No cluster runs here, so the pod's init container and sidecar run as Docker containers sharing a
directory as the pod's ``emptyDir``. Their image is built once (cached by tag) FROM the Debian
base image with python3 and boto3 unpacked from a wheelhouse downloaded on the host (containers
reach no PyPI), and without this package: the point is that the sync needs only what the pod
spec carries. The store is a real S3 API (moto) on loopback, reached over the host network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import types
from importlib import metadata
from typing import TYPE_CHECKING

import pytest

from airflow_mlops_provider.checkpoints.kubernetes import RESTORE_CONTAINER, SYNC_CONTAINER
from airflow_mlops_provider.checkpoints.store import store_from_uri
from airflow_mlops_provider.checkpoints.sync import CheckpointSync
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from tests.conftest import REPO_ROOT
from tests.support.moto_server import ACCESS_KEY, SECRET_KEY
from tests.unit.kubernetes.conftest import FAKE_KUBECONFIG

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.docker]

#: boto3 and its dependency closure (all pure Python), at the versions of this environment.
DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six")
#: The uid the trainer runs as (the base container's securityContext; the sync containers copy it).
TRAINER_UID = 4242
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY wheels/ /tmp/wheels/
RUN set -e; mkdir -p /opt/sync/site; \\
    for w in /tmp/wheels/*.whl; do python3 -m zipfile -e "$w" /opt/sync/site; done; rm -rf /tmp/wheels
ENV PYTHONPATH=/opt/sync/site
"""


@pytest.fixture(scope="module")
def sync_image(base_image: str) -> str:
    """An image with python3 and boto3 only: built once, then found by its tag (a hash of its inputs)."""
    pins = [f"{name}=={metadata.version(name)}" for name in DISTRIBUTIONS]
    digest = hashlib.sha256("\n".join([*pins, DOCKERFILE, base_image]).encode()).hexdigest()[:12]
    tag = f"mlops-checkpoint-sync:{digest}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    context = REPO_ROOT / ".wheelhouse" / "checkpoint-sync"
    wheels = context / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    uv = os.environ.get("UV") or str(REPO_ROOT / ".tools/bin/uv")
    subprocess.run(
        [uv, "tool", "run", "-q", "--python", "3.11", "--from", "pip", "pip", "download", "--quiet"]
        + ["--only-binary=:all:", "--no-deps", "-d", str(wheels), *pins],
        check=True,
        timeout=300,
    )
    (context / "Dockerfile").write_text(DOCKERFILE)
    subprocess.run(
        ["docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag, str(context)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return tag


def _pod(tmp_path, monkeypatch, endpoint: str, image: str, **kwargs):
    """The operator and the pod it builds (KubernetesPodOperator's real builder, no cluster)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}),
    )
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_ENDPOINT_URL", endpoint)
    op = GpuKubernetesPodOperator(
        task_id="train",
        image="registry.example.com/train:1",
        namespace="ml",
        checkpoint="s3://pods/ckpt",
        checkpoint_interval=1,
        checkpoint_sync_image=image,
        checkpoint_secret="ckpt-credentials",
        container_security_context={"runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID},
        **kwargs,
    )
    ti = types.SimpleNamespace(dag_id="podsync", task_id="train", run_id="r1", map_index=-1, try_number=1)
    pod = op.build_pod_request_obj({"ti": ti, "run_id": "r1", "dag": types.SimpleNamespace(dag_id="podsync")})
    return op, pod


def _emptydir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)  # as Kubernetes makes an emptyDir
    return path


def _docker_run(container, volume: Path, *extra: str, command: list[str] | None = None) -> list[str]:
    """``docker run`` of a pod's init container: its image, command, env and user, on the host network."""
    user = container.security_context
    args = ["docker", "run", *extra, "--network", "host", "-v", f"{volume}:/mlops/checkpoint"]
    args += ["--user", f"{user.run_as_user}:{user.run_as_group}"]
    for env in container.env:
        args += ["-e", f"{env.name}={env.value}"]
    # What the Secret named in checkpoint_secret gives the containers through envFrom.
    args += ["-e", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}", "-e", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}"]
    args += ["-e", "AWS_DEFAULT_REGION=us-east-1"]
    return [*args, container.image, *(command or container.command)]


def _write(path: Path, data: str) -> None:
    """Write as a trainer should: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def _manifest_step(store, prefix: str):
    raw = store.get_bytes(f"{prefix}/manifest.json")
    return None if raw is None else json.loads(raw).get("meta", {}).get("step")


def test_init_container_restores_and_sidecar_uploads_on_sigterm(moto_s3, sync_image, tmp_path, monkeypatch):
    moto_s3.make_bucket("pods")
    _, pod = _pod(tmp_path, monkeypatch, moto_s3.endpoint_url, sync_image)
    containers = {c.name: c for c in pod.spec.init_containers}
    restore, sidecar = containers[RESTORE_CONTAINER], containers[SYNC_CONTAINER]
    assert sidecar.restart_policy == "Always"
    prefix = restore.command[restore.command.index("--prefix") + 1]
    # The image has boto3 and not this package.
    probe = subprocess.run(
        ["docker", "run", "--rm", sync_image, "python3", "-c"]
        + [
            "import boto3, importlib.util as u; print(boto3.__version__, u.find_spec('airflow_mlops_provider'))"
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.split() == [metadata.version("boto3"), "None"], probe.stderr

    store = store_from_uri("s3://pods/ckpt", client_kwargs=moto_s3.client_kwargs())
    # An earlier try's checkpoint, uploaded from the worker side.
    earlier = tmp_path / "earlier"
    _write(earlier / "opt" / "state.json", json.dumps({"step": 12}))
    _write(earlier / "mlops-checkpoint.json", json.dumps({"step": 12}))
    CheckpointSync(store, prefix, earlier).upload()

    volume = _emptydir(tmp_path / "emptydir")
    (volume / "junk").write_text("left before restore")
    run = subprocess.run(_docker_run(restore, volume, "--rm"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads((volume / "opt" / "state.json").read_text()) == {"step": 12}
    assert not (volume / "junk").exists()
    # Restored as the trainer's user, so the trainer can write into what it gets back.
    assert (volume / "opt").stat().st_uid == TRAINER_UID
    assert (volume / "opt" / "state.json").stat().st_uid == TRAINER_UID
    assert "restored" in run.stderr

    name = f"mlops-podsync-{os.getpid()}"
    started = subprocess.run(
        _docker_run(sidecar, volume, "-d", "--name", name), capture_output=True, text=True, check=True
    )
    try:
        assert started.stdout.strip()
        # The "trainer" writes step 13; a periodic upload takes it while the sidecar runs.
        _write(volume / "opt" / "state.json", json.dumps({"step": 13}))
        _write(volume / "mlops-checkpoint.json", json.dumps({"step": 13}))
        deadline = time.monotonic() + 60
        while _manifest_step(store, prefix) != 13 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _manifest_step(store, prefix) == 13
        # Step 14 and a new file, written just before the pod ends: only the final upload has them.
        _write(volume / "opt" / "state.json", json.dumps({"step": 14}))
        _write(volume / "mlops-checkpoint.json", json.dumps({"step": 14}))
        _write(volume / "final.bin", "written just before the pod ends")
        subprocess.run(["docker", "kill", "--signal", "TERM", name], check=True, capture_output=True)
        waited = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=60)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert waited.stdout.strip() == "0", logs
        assert "final" in logs
        assert SECRET_KEY not in logs
        assert ACCESS_KEY not in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert _manifest_step(store, prefix) == 14
    # The next try's pod: its restore container, on a fresh emptyDir.
    fresh = _emptydir(tmp_path / "fresh")
    again = subprocess.run(_docker_run(restore, fresh, "--rm"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads((fresh / "opt" / "state.json").read_text()) == {"step": 14}
    assert (fresh / "final.bin").read_text() == "written just before the pod ends"
    assert SECRET_KEY not in again.stderr


def test_restore_container_fails_without_retry_code_on_a_missing_bucket(
    moto_s3, sync_image, tmp_path, monkeypatch
):
    _, pod = _pod(tmp_path, monkeypatch, moto_s3.endpoint_url, sync_image)
    restore = pod.spec.init_containers[0]
    command = [part.replace("s3://pods/ckpt", "s3://no-such-pod-bucket/ckpt") for part in restore.command]
    volume = _emptydir(tmp_path / "v")
    run = subprocess.run(
        _docker_run(restore, volume, "--rm", command=command), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2, run.stderr
    assert "'no-such-pod-bucket' does not exist" in run.stderr


def test_delete_on_success_waits_for_the_final_upload(moto_s3, tmp_path, monkeypatch):
    """Retention runs on the worker after the sidecar has exited: else its upload would come back."""
    from kubernetes.client import models as k8s

    from airflow_mlops_provider.operators import kubernetes_checkpoint

    moto_s3.make_bucket("pods")
    for name, value in moto_s3.aws_conn_uri_env("ckpt_s3").items():
        monkeypatch.setenv(name, value)
    op, pod = _pod(
        tmp_path,
        monkeypatch,
        moto_s3.endpoint_url,
        "registry.example.com/ckpt-sync:1",
        checkpoint_retention="delete_on_success",
        checkpoint_conn_id="ckpt_s3",
    )
    prefix = pod.metadata.annotations[kubernetes_checkpoint.PREFIX_ANNOTATION]
    store = store_from_uri("s3://pods/ckpt", client_kwargs=moto_s3.client_kwargs())
    work = tmp_path / "work"
    _write(work / "model.bin", "weights")

    def sidecar(state: k8s.V1ContainerState) -> k8s.V1Pod:
        status = k8s.V1ContainerStatus(
            name=SYNC_CONTAINER,
            image="registry.example.com/ckpt-sync:1",
            image_id="",
            ready=False,
            restart_count=0,
            state=state,
        )
        return k8s.V1Pod(status=k8s.V1PodStatus(phase="Running", init_container_statuses=[status]))

    reads: list[int] = []

    def read_pod(_pod):
        reads.append(1)
        if len(reads) < 3:  # still running its final upload, which lands before it exits
            CheckpointSync(store, prefix, work).upload()
            return sidecar(k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()))
        return sidecar(k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=0)))

    op.__dict__["pod_manager"] = types.SimpleNamespace(read_pod=read_pod)
    monkeypatch.setattr(kubernetes_checkpoint, "POLL_SECONDS", 0.05)
    kubernetes_checkpoint.checkpoint_after_success(op, pod)
    assert len(reads) == 3
    assert store.list_keys(prefix) == []
