"""Checkpoints on Kubernetes: an init container restores, a native sidecar uploads.

The pod syncs itself, so a killed worker, a rescheduled pod or a deleted one lose at most one
``checkpoint_interval``. What :func:`checkpoint_pod_parts` adds to the pod:

- an ``emptyDir`` volume ``mlops-checkpoint``, mounted at ``/mlops/checkpoint`` in the base
  container, and ``MLOPS_CHECKPOINT_DIR=/mlops/checkpoint``;
- the init container ``mlops-checkpoint-restore``: restores the latest complete checkpoint
  before the base container starts (a permanent error, such as a missing bucket, fails it);
- the init container ``mlops-checkpoint-sync`` with ``restartPolicy: Always``, a native sidecar
  (Kubernetes 1.29 and later): uploads what changed every ``checkpoint_interval`` seconds, and
  once more when Kubernetes sends it SIGTERM, after the base container exits or when the pod is
  deleted (within the pod's ``terminationGracePeriodSeconds``).

Both run ``checkpoint_sync_image``, which needs python3 and boto3 but not this package: the
source of :mod:`~airflow_mlops_provider.checkpoints.store`, :mod:`~airflow_mlops_provider.checkpoints.sync`
and :mod:`~airflow_mlops_provider.checkpoints.sidecar` travels compressed in the env var
``MLOPS_CHECKPOINT_SYNC_SOURCE``, and a short bootstrap runs it. Credentials never enter the
pod spec: give a Secret's name in ``checkpoint_secret`` (its keys, such as
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, become the sync containers' environment), or
let the pod's own identity (IRSA, workload identity) be found by boto3. The endpoint of an
S3-compatible store is not secret and goes in ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_DIR_ENV, CONTAINER_CHECKPOINT_DIR

if TYPE_CHECKING:
    from airflow_mlops_provider.checkpoints.settings import CheckpointSettings

__all__ = [
    "RESTORE_CONTAINER",
    "SOURCE_ENV",
    "SYNC_CONTAINER",
    "VOLUME_NAME",
    "bootstrap_command",
    "checkpoint_pod_parts",
    "sync_identity",
    "sync_sidecar_done",
    "sync_source",
]

VOLUME_NAME = "mlops-checkpoint"
RESTORE_CONTAINER = "mlops-checkpoint-restore"
SYNC_CONTAINER = "mlops-checkpoint-sync"
SOURCE_ENV = "MLOPS_CHECKPOINT_SYNC_SOURCE"
_MODULES = ("store", "sync", "sidecar")
_PACKAGE = "airflow_mlops_provider.checkpoints"

#: Registers the shipped modules under their own names, then runs ``sidecar.main``.
BOOTSTRAP = f"""\
import base64, json, os, sys, types, zlib
sources = json.loads(zlib.decompress(base64.b64decode(os.environ["{SOURCE_ENV}"])))
for package in ("airflow_mlops_provider", "{_PACKAGE}"):
    module = types.ModuleType(package)
    module.__path__ = []
    sys.modules[package] = module
for name in {list(_MODULES)!r}:
    module = types.ModuleType("{_PACKAGE}." + name)
    sys.modules[module.__name__] = module
    exec(compile(sources[name], module.__name__, "exec"), module.__dict__)
sys.exit(sys.modules["{_PACKAGE}.sidecar"].main(sys.argv[1:]))
"""


def sync_source() -> str:
    """Return the compressed source of ``store``, ``sync`` and ``sidecar`` (the value of ``MLOPS_CHECKPOINT_SYNC_SOURCE``)."""
    here = Path(__file__).parent
    sources = {name: (here / f"{name}.py").read_text() for name in _MODULES}
    return base64.b64encode(zlib.compress(json.dumps(sources).encode(), 9)).decode()


def bootstrap_command(mode: str, settings: CheckpointSettings, prefix: str) -> list[str]:
    """Return the command of the restore (``mode="restore"``) or sidecar (``"sidecar"``) container."""
    command = ["python3", "-c", BOOTSTRAP, mode, "--uri", settings.uri, "--prefix", prefix]
    command += ["--dir", CONTAINER_CHECKPOINT_DIR]
    if mode == "sidecar":
        command += ["--interval", f"{settings.interval:g}"]
    if settings.max_bytes is not None:
        command += ["--max-bytes", str(settings.max_bytes)]
    return command


def checkpoint_pod_parts(
    settings: CheckpointSettings,
    prefix: str,
    *,
    image: str,
    secret: str | None = None,
    endpoint_url: str | None = None,
    security_context: Any = None,
) -> dict[str, Any]:
    """
    Return what a pod needs for its checkpoint: ``volume``, ``mount`` and ``env`` for the base
    container, and ``init_containers`` (the restore container, then the sidecar).

    :param settings: The resolved settings; its URI must be ``s3://``.
    :param prefix: Where the checkpoint lives under the URI.
    :param image: The sync image (python3 and boto3).
    :param secret: A Secret whose keys become the sync containers' environment (credentials).
    :param endpoint_url: The S3-compatible endpoint, if any.
    :param security_context: The sync containers' ``V1SecurityContext`` (see :func:`sync_identity`).
    :raises ValueError: naming the value, for a local path (it is on the worker, not in the pod).
    """
    from kubernetes.client import models as k8s

    if settings.scheme != "s3":
        raise ValueError(
            "checkpoint on Kubernetes must be object storage (s3://bucket/prefix): a local path is "
            f"on the worker, not in the pod, got {settings.uri!r}"
        )
    mount = k8s.V1VolumeMount(name=VOLUME_NAME, mount_path=CONTAINER_CHECKPOINT_DIR)
    env = [
        k8s.V1EnvVar(name=SOURCE_ENV, value=sync_source()),
        k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
    ]
    if endpoint_url:
        env.append(k8s.V1EnvVar(name="AWS_ENDPOINT_URL", value=endpoint_url))
    env_from = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=secret))] if secret else None
    small = k8s.V1ResourceRequirements(requests={"cpu": "100m", "memory": "128Mi"})
    restore = k8s.V1Container(
        name=RESTORE_CONTAINER,
        image=image,
        command=bootstrap_command("restore", settings, prefix),
        env=env,
        env_from=env_from,
        volume_mounts=[mount],
        resources=small,
        security_context=security_context,
    )
    sidecar = k8s.V1Container(
        name=SYNC_CONTAINER,
        image=image,
        command=bootstrap_command("sidecar", settings, prefix),
        env=env,
        env_from=env_from,
        volume_mounts=[mount],
        resources=small,
        security_context=security_context,
        restart_policy="Always",
    )
    return {
        "volume": k8s.V1Volume(name=VOLUME_NAME, empty_dir=k8s.V1EmptyDirVolumeSource()),
        "mount": mount,
        "env": k8s.V1EnvVar(name=CHECKPOINT_DIR_ENV, value=CONTAINER_CHECKPOINT_DIR),
        "init_containers": [restore, sidecar],
    }


def endpoint_of(settings: CheckpointSettings) -> str | None:
    """The endpoint URL the pod should use (the connection's ``endpoint_url``, else ``[mlops]``'s)."""
    return settings.client_kwargs().get("endpoint_url") or settings.endpoint_url


_IDENTITY_KEYS = {"run_as_user": "runAsUser", "run_as_group": "runAsGroup", "run_as_non_root": "runAsNonRoot"}


def sync_identity(container_security_context: Any) -> Any:
    """
    Return the sync containers' ``V1SecurityContext``: the base container's user and group only.

    The restored files and directories then belong to the user the trainer runs as, so it can
    write into them, and the sidecar can read what it writes. Nothing else (capabilities,
    privileges) is copied. None when the base container sets no user (the pod's
    ``security_context``, if any, applies to every container anyway).

    :param container_security_context: The operator's ``container_security_context`` (a
        ``V1SecurityContext`` or a dict, keys in either spelling), or None.
    """
    from kubernetes.client import models as k8s

    if container_security_context is None:
        return None
    found: dict[str, Any] = {}
    for attr, key in _IDENTITY_KEYS.items():
        if isinstance(container_security_context, dict):
            value = container_security_context.get(key, container_security_context.get(attr))
        else:
            value = getattr(container_security_context, attr, None)
        if value is not None:
            found[attr] = value
    return k8s.V1SecurityContext(**found) if found else None


def sync_sidecar_done(remote_pod: Any) -> bool:
    """
    Whether the pod's sync sidecar has finished its final upload (or never ran, or the pod is gone).

    :param remote_pod: The pod as the API server reports it (``V1Pod``), or None.
    """
    status = getattr(remote_pod, "status", None)
    if status is None:
        return True
    for container in status.init_container_statuses or []:
        if container.name == SYNC_CONTAINER:
            state = container.state
            if state is not None and state.terminated is not None:
                return True
            # Not started yet (waiting) and never to start: the pod has ended.
            running = state is not None and state.running is not None
            return not running and status.phase in ("Succeeded", "Failed")
    return True
