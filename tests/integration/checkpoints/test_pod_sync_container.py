"""The Kubernetes checkpoint containers, run for real: the exact commands of the built pod, in Docker.

No cluster runs here, so the pod's init container and sidecar run as Docker containers of the
Debian base image, sharing a directory as the pod's ``emptyDir``. The image has python3 and
boto3 (copied from this virtualenv onto ``PYTHONPATH``) and not this package: the point is
that the sync needs only what the pod spec carries. The store is a real S3 API (moto).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from airflow_mlops_provider.checkpoints.store import store_from_uri
from airflow_mlops_provider.checkpoints.sync import CheckpointSync
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from tests.support.moto_server import ACCESS_KEY, SECRET_KEY
from tests.unit.kubernetes.conftest import FAKE_KUBECONFIG

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DEPENDENCIES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


@pytest.fixture(scope="module")
def boto3_only(tmp_path_factory) -> Path:
    """boto3 and its dependencies, nothing else: the sync image's site-packages."""
    site = (
        Path(sys.executable).parents[1]
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    target = tmp_path_factory.mktemp("deps")
    for name in DEPENDENCIES:
        source = site / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target / name)
    return target


def _pod(tmp_path, monkeypatch, endpoint: str):
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
        checkpoint_sync_image="mlops-base:bookworm",
        checkpoint_secret="ckpt-credentials",
    )
    ti = types.SimpleNamespace(dag_id="podsync", task_id="train", run_id="r1", map_index=-1, try_number=1)
    pod = op.build_pod_request_obj({"ti": ti, "run_id": "r1", "dag": types.SimpleNamespace(dag_id="podsync")})
    return {c.name: c for c in pod.spec.init_containers}


def _docker_args(container, volume: Path, deps: Path) -> list[str]:
    args = [
        "--network",
        "host",
        "-v",
        f"{volume}:/mlops/checkpoint",
        "-v",
        f"{deps}:/deps:ro",
        "-e",
        "PYTHONPATH=/deps",
    ]
    for env in container.env:
        args += ["-e", f"{env.name}={env.value}"]
    # What the Secret named in checkpoint_secret gives the containers through envFrom.
    args += ["-e", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}", "-e", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}"]
    return [*args, "-e", "AWS_DEFAULT_REGION=us-east-1"]


def test_init_container_restores_and_sidecar_uploads_on_sigterm(
    moto_s3, base_image, boto3_only, tmp_path, monkeypatch
):
    moto_s3.make_bucket("pods")
    containers = _pod(tmp_path, monkeypatch, moto_s3.endpoint_url)
    restore, sidecar = containers["mlops-checkpoint-restore"], containers["mlops-checkpoint-sync"]
    prefix = restore.command[restore.command.index("--prefix") + 1]
    store = store_from_uri("s3://pods/ckpt", client_kwargs=moto_s3.client_kwargs())
    # An earlier try's checkpoint, uploaded from the worker side.
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "state.json").write_text(json.dumps({"step": 12}))
    (earlier / "mlops-checkpoint.json").write_text(json.dumps({"step": 12}))
    CheckpointSync(store, prefix, earlier).upload()

    volume = tmp_path / "emptydir"
    volume.mkdir()
    (volume / "junk").write_text("left before restore")
    run = subprocess.run(
        ["docker", "run", "--rm", *_docker_args(restore, volume, boto3_only), base_image, *restore.command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((volume / "state.json").read_text()) == {"step": 12}
    assert not (volume / "junk").exists()
    assert "restored" in run.stderr

    name = f"mlops-podsync-{os.getpid()}"
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            *_docker_args(sidecar, volume, boto3_only),
            base_image,
            *sidecar.command,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    try:
        assert started.stdout.strip()
        # The "trainer" writes a newer checkpoint into the shared directory.
        for step in (13, 14):
            (volume / "state.json").write_text(json.dumps({"step": step}))
            (volume / "mlops-checkpoint.json").write_text(json.dumps({"step": step}))
            time.sleep(1.5)
        (volume / "final.bin").write_bytes(b"written just before the pod ends")
        stop = subprocess.run(
            ["docker", "stop", "-t", "20", name], capture_output=True, text=True, timeout=60
        )
        assert stop.returncode == 0, stop.stderr
        state = json.loads(
            subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
        )[0]["State"]
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert state["ExitCode"] == 0, logs
        assert "final upload" in logs
        assert SECRET_KEY not in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    fresh = tmp_path / "fresh"
    result = CheckpointSync(store, prefix, fresh).restore()
    assert result.restored
    assert result.step == 14
    assert (fresh / "final.bin").read_bytes() == b"written just before the pod ends"


def test_restore_container_fails_without_retry_code_on_a_missing_bucket(
    moto_s3, base_image, boto3_only, tmp_path, monkeypatch
):
    containers = _pod(tmp_path, monkeypatch, moto_s3.endpoint_url)
    restore = containers["mlops-checkpoint-restore"]
    command = [part.replace("s3://pods/ckpt", "s3://no-such-pod-bucket/ckpt") for part in restore.command]
    volume = tmp_path / "v"
    volume.mkdir()
    run = subprocess.run(
        ["docker", "run", "--rm", *_docker_args(restore, volume, boto3_only), base_image, *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "'no-such-pod-bucket' does not exist" in run.stderr
