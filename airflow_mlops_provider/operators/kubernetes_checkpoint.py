"""GpuKubernetesPodOperator's checkpoint: the pod's init container, sidecar, volume and env.

The pieces are built by :mod:`airflow_mlops_provider.checkpoints.kubernetes`; this module lays
them over the operator's fields while the pod is built, and deletes the checkpoint from the
worker after a success when ``checkpoint_retention="delete_on_success"``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

__all__ = [
    "PREFIX_ANNOTATION",
    "add_checkpoint_to_pod",
    "check_pod_checkpoint_args",
    "checkpoint_after_success",
    "wait_for_final_upload",
]

#: The pod annotation that records where the pod's checkpoint lives under the URI.
PREFIX_ANNOTATION = "airflow-mlops/checkpoint-prefix"
#: Seconds between reads of the pod while its sidecar makes the final upload.
POLL_SECONDS = 1.0
#: Seconds past the pod's ``terminationGracePeriodSeconds`` to wait for that upload.
GRACE_MARGIN_SECONDS = 15.0


def check_pod_checkpoint_args(image: Any, secret: Any) -> str | None:
    """Check ``checkpoint_sync_image`` and ``checkpoint_secret`` at parse time; return the image."""
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise ValueError(f"checkpoint_sync_image must be an image reference, got {image!r}")
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        raise ValueError(f"checkpoint_secret must be the name of a Kubernetes Secret, got {secret!r}")
    return image


def _sync_image(operator: Any) -> str:
    from airflow.sdk import conf

    from airflow_mlops_provider.exceptions import CheckpointConfigError

    image = (
        operator.checkpoint_sync_image
        or (conf.get("mlops", "checkpoint_sync_image", fallback="") or "").strip()
    )
    if not image:
        raise CheckpointConfigError(
            "checkpoint on Kubernetes needs an image for its init container and sidecar (python3 and "
            "boto3): set checkpoint_sync_image or [mlops] checkpoint_sync_image, got none"
        )
    return image


def add_checkpoint_to_pod(operator: Any, context: Context) -> None:
    """
    Lay the checkpoint's volume, mount, env and init containers over the operator's pod fields.

    The caller saves and restores those fields around the pod build. Nothing happens when
    checkpoints are off.

    :raises CheckpointConfigError: for a local path, a bad rendered URI or a missing sync image.
    """
    from airflow_mlops_provider.checkpoints.kubernetes import (
        checkpoint_pod_parts,
        endpoint_of,
        sync_identity,
    )
    from airflow_mlops_provider.checkpoints.task import resolved_checkpoint, task_checkpoint_prefix
    from airflow_mlops_provider.exceptions import CheckpointConfigError

    settings = resolved_checkpoint(operator)
    if settings is None:
        return
    try:
        parts = checkpoint_pod_parts(
            settings,
            task_checkpoint_prefix(operator, context),
            image=_sync_image(operator),
            secret=operator.checkpoint_secret,
            endpoint_url=endpoint_of(settings),
            security_context=sync_identity(operator.container_security_context),
        )
    except ValueError as err:
        raise CheckpointConfigError(str(err), location=settings.uri) from err
    operator.volumes = [*operator.volumes, parts["volume"]]
    operator.volume_mounts = [*operator.volume_mounts, parts["mount"]]
    operator.env_vars = [*operator.env_vars, parts["env"]]
    operator.init_containers = [*(operator.init_containers or []), *parts["init_containers"]]
    # Where the checkpoint lives, for retention after the pod ends (also in deferrable mode).
    operator.annotations = {
        **(operator.annotations or {}),
        PREFIX_ANNOTATION: task_checkpoint_prefix(operator, context),
    }
    operator.log.info(
        "Checkpoint %s: restored by init container, uploaded every %g s by a sidecar",
        settings.location(task_checkpoint_prefix(operator, context)),
        settings.interval,
    )
    if settings.conn_id and not operator.checkpoint_secret:
        operator.log.warning(
            "checkpoint_conn_id %r is used by the worker only (retention); the pod's sync containers "
            "get no credentials from it: name a Secret in checkpoint_secret, or rely on the pod's identity",
            settings.conn_id,
        )


def checkpoint_after_success(operator: Any, pod: k8s.V1Pod) -> None:
    """After a successful pod, delete its checkpoint when ``checkpoint_retention="delete_on_success"``."""
    from airflow_mlops_provider.checkpoints.task import resolved_checkpoint

    settings = resolved_checkpoint(operator)
    if settings is None or settings.retention != "delete_on_success":
        return
    from airflow_mlops_provider.checkpoints.session import CheckpointSession

    prefix = ((pod.metadata.annotations if pod is not None and pod.metadata else None) or {}).get(
        PREFIX_ANNOTATION
    )
    if not prefix:
        operator.log.warning("Checkpoint kept: the pod does not say where it lives (%s)", PREFIX_ANNOTATION)
        return
    # The sidecar's final upload may still run (KPO stops waiting at the base container when it
    # reads a result file, and deferrable mode too): deleting before it ends would let it
    # write the checkpoint back.
    wait_for_final_upload(operator, pod)
    CheckpointSession(settings, prefix, log=operator.log).delete()


def wait_for_final_upload(operator: Any, pod: k8s.V1Pod) -> bool:
    """
    Wait until the pod's sync sidecar has exited (or the pod is gone); False if it outlived the wait.

    The wait is bounded by the pod's ``terminationGracePeriodSeconds`` (default 30), after which
    the kubelet kills the sidecar anyway, plus :data:`GRACE_MARGIN_SECONDS`.
    """
    from airflow_mlops_provider.checkpoints.kubernetes import sync_sidecar_done

    grace = getattr(pod.spec, "termination_grace_period_seconds", None) if pod.spec else None
    deadline = time.monotonic() + (30 if grace is None else grace) + GRACE_MARGIN_SECONDS
    while True:
        try:
            remote = operator.pod_manager.read_pod(pod)
        except Exception as err:
            if getattr(err, "status", None) == 404:  # deleted: its containers have exited
                return True
            operator.log.warning(
                "Could not read pod %s to await its final upload: %s", pod.metadata.name, err
            )
            return False
        if sync_sidecar_done(remote):
            return True
        if time.monotonic() > deadline:
            operator.log.warning(
                "The checkpoint sidecar of pod %s still runs; deleting the checkpoint anyway",
                pod.metadata.name,
            )
            return False
        time.sleep(POLL_SECONDS)
