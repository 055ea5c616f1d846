"""GpuKubernetesPodOperator's checkpoint: the pod's init container, sidecar, volume and env.

The pieces are built by :mod:`airflow_mlops_provider.checkpoints.kubernetes`; this module lays
them over the operator's fields while the pod is built, and deletes the checkpoint from the
worker after a success when ``checkpoint_retention="delete_on_success"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

__all__ = [
    "PREFIX_ANNOTATION",
    "add_checkpoint_to_pod",
    "check_pod_checkpoint_args",
    "checkpoint_after_success",
]

#: The pod annotation that records where the pod's checkpoint lives under the URI.
PREFIX_ANNOTATION = "airflow-mlops/checkpoint-prefix"


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
    from airflow_mlops_provider.checkpoints.kubernetes import checkpoint_pod_parts, endpoint_of
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
    CheckpointSession(settings, prefix, log=operator.log).delete()
