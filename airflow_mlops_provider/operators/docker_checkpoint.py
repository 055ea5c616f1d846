"""GpuDockerOperator's checkpoint: a bind mount of the worker's working copy, synced by the worker.

The container sees ``$MLOPS_CHECKPOINT_DIR=/mlops/checkpoint``, a bind mount of the
``CheckpointSession``'s directory on the worker (``[mlops] checkpoint_local_dir``), so the Docker
engine must see the worker's filesystem (a local engine, or the same path on the engine's host).
The worker restores into it before the container is created, uploads what changed every
``checkpoint_interval`` seconds while the container runs, and once more after the container
has stopped (success, failure, ``execution_timeout``, SIGTERM, a mark-failed). A retry that
reattaches to a container still running restores nothing: that container owns the directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.checkpoints.settings import CONTAINER_CHECKPOINT_DIR

if TYPE_CHECKING:
    from airflow_mlops_provider.checkpoints.session import CheckpointSession

__all__ = ["checkpoint_mount", "start_checkpoint"]


def checkpoint_mount(session: CheckpointSession) -> Any:
    """Return the read-write bind mount of the session's directory at ``/mlops/checkpoint``."""
    from docker.types import Mount

    return Mount(target=CONTAINER_CHECKPOINT_DIR, source=str(session.local_dir), type="bind", read_only=False)


def start_checkpoint(session: CheckpointSession, *, restore: bool) -> None:
    """Restore (unless reattaching to a running container), then start the periodic upload."""
    if restore:
        session.restore()
    else:
        session.local_dir.mkdir(parents=True, exist_ok=True)
        session.log.info(
            "Reattached: the running container keeps its checkpoint directory %s; nothing restored",
            session.local_dir,
        )
    session.start()
