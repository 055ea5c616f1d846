"""The checkpoint arguments on an operator: checked in ``__init__``, a session at ``execute``.

Every runtime's operator calls :func:`init_checkpoint` in its ``__init__`` and
:func:`task_session` in ``execute``, so the arguments, their checks and the checkpoint's place
are the same on Docker, local and Kubernetes (``checkpoint`` is one of their template fields).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.checkpoints.settings import CheckpointOptions, CheckpointSettings, task_prefix

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops_provider.checkpoints.session import CheckpointSession

__all__ = ["init_checkpoint", "resolved_checkpoint", "task_checkpoint_prefix", "task_session"]


def init_checkpoint(
    operator: Any,
    *,
    checkpoint: Any = None,
    checkpoint_interval: Any = None,
    checkpoint_retention: Any = None,
    checkpoint_max_bytes: Any = None,
    checkpoint_conn_id: Any = None,
    checkpoint_prefix: Any = None,
) -> None:
    """
    Check the checkpoint arguments at parse time and keep them on ``operator``.

    :param checkpoint_prefix: Where under the URI this task's checkpoint lives, instead of the
        task instance's own place (a sweep's trial uses ``trial_prefix``). Not templated.
    :raises ValueError: naming the argument and the value.
    """
    if checkpoint_prefix is not None and (
        not isinstance(checkpoint_prefix, str) or not checkpoint_prefix.strip("/")
    ):
        raise ValueError(f"checkpoint_prefix must be a non-empty key prefix, got {checkpoint_prefix!r}")
    operator.checkpoint = checkpoint
    operator.checkpoint_options = CheckpointOptions.from_args(
        checkpoint=checkpoint,
        checkpoint_interval=checkpoint_interval,
        checkpoint_retention=checkpoint_retention,
        checkpoint_max_bytes=checkpoint_max_bytes,
        checkpoint_conn_id=checkpoint_conn_id,
    )
    operator.checkpoint_prefix = checkpoint_prefix.strip("/") if checkpoint_prefix else None


def resolved_checkpoint(operator: Any) -> CheckpointSettings | None:
    """The operator's checkpoint settings after rendering (None: off); ``CheckpointConfigError`` if bad."""
    return operator.checkpoint_options.resolve(operator.checkpoint)


def task_checkpoint_prefix(operator: Any, context: Context) -> str:
    """Where the operator's checkpoint lives under the URI: its ``checkpoint_prefix``, else the task instance's."""
    from airflow_mlops_provider.operators._common import task_identity

    return operator.checkpoint_prefix or task_prefix(task_identity(context))


def task_session(operator: Any, context: Context) -> CheckpointSession | None:
    """Return the operator's ``CheckpointSession`` for this task instance, or None when checkpoints are off."""
    settings = resolved_checkpoint(operator)
    if settings is None:
        return None
    from airflow_mlops_provider.checkpoints.session import CheckpointSession

    return CheckpointSession(settings, task_checkpoint_prefix(operator, context), log=operator.log)
