"""Checkpoints of sweep trials: one per ``trial_id``, resumed by the next try and the next rung.

A trial's checkpoint lives at ``<uri>/<dag_id>/<run_id>/trials/<trial_id>/``, whatever task or
batch runs it, so:

- a retried trial task resumes each trial from where its last upload left it;
- in successive halving a promoted trial keeps its ``trial_id``: the next rung restores the
  previous rung's checkpoint and trains from there up to its larger ``budget``
  (``$MLOPS_BUDGET``), instead of starting over.

Trial checkpoints are kept while the sweep runs (a later rung may need them); the selection task
deletes them with ``delete_checkpoints="losers"`` (every trial but the best) or ``"all"``.
Python trials get ``$MLOPS_CHECKPOINT_DIR`` in ``os.environ`` while they run, and a
``checkpoint_dir`` argument when their signature names it.
"""

from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_ARGS, CheckpointOptions, trial_prefix

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import Context

__all__ = [
    "DELETE_CHECKPOINTS",
    "check_delete_checkpoints",
    "delete_trial_checkpoints",
    "pop_checkpoint_options",
    "with_trial_checkpoints",
]

#: ``delete_checkpoints`` values of the selection tasks.
DELETE_CHECKPOINTS = ("losers", "all")
log = logging.getLogger(__name__)


def pop_checkpoint_options(kwargs: dict[str, Any]) -> CheckpointOptions:
    """Remove the checkpoint arguments from ``kwargs`` and return them checked (``ValueError`` naming a bad one)."""
    given = {name: kwargs.pop(name) for name in CHECKPOINT_ARGS if name in kwargs}
    if given.get("checkpoint_retention") not in (None, "keep"):
        raise ValueError(
            "trial checkpoints are kept while the sweep runs (a later rung resumes them); delete them "
            "with select_best_trial(delete_checkpoints='losers'), got checkpoint_retention="
            f"{given['checkpoint_retention']!r}"
        )
    return CheckpointOptions.from_args(**given)


def check_delete_checkpoints(value: Any) -> str | None:
    """Return ``value`` if it is None or one of :data:`DELETE_CHECKPOINTS`; raise ``ValueError`` naming it otherwise."""
    if value is not None and value not in DELETE_CHECKPOINTS:
        raise ValueError(
            f"delete_checkpoints must be None or one of {list(DELETE_CHECKPOINTS)}, got {value!r}"
        )
    return value


def with_trial_checkpoints(
    run_one: Callable[[Mapping[str, Any], Mapping[str, str]], Any],
    options: CheckpointOptions,
    context: Context | None,
    task_log: Any,
) -> Callable[[Mapping[str, Any], Mapping[str, str]], Any]:
    """
    Wrap a Python trial's ``run_one`` with its checkpoint: restored, uploaded periodically, uploaded at the end.

    ``checkpoint`` is rendered with the task's context first (``"{{ params.ckpt }}"``). After the
    final upload the trial's working directory is removed: a batch of many trials would
    otherwise leave one copy of each on the worker, and the next restore rebuilds it anyway.
    Returns ``run_one`` itself when checkpoints are off or the task has no context.

    :raises CheckpointConfigError: a bad rendered ``checkpoint`` (no retries).
    """
    if context is None:
        return run_one
    checkpoint = options.checkpoint
    task = context.get("task")
    if isinstance(checkpoint, str) and task is not None:
        checkpoint = task.render_template(checkpoint, context)
    settings = options.resolve(checkpoint)
    if settings is None:
        return run_one
    from airflow_mlops_provider.checkpoints.session import CheckpointSession
    from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_DIR_ENV

    ti = context["ti"]

    def run_with_checkpoint(trial: Mapping[str, Any], extra_env: Mapping[str, str]) -> Any:
        trial_id = trial.get("trial_id")
        if trial_id is None:
            task_log.warning("Trial %r has no trial_id: it runs without a checkpoint", dict(trial))
            return run_one(trial, extra_env)
        session = CheckpointSession(settings, trial_prefix(ti.dag_id, ti.run_id, str(trial_id)), log=task_log)
        session.restore()
        session.start()
        succeeded = False
        try:
            result = run_one(trial, {**extra_env, CHECKPOINT_DIR_ENV: str(session.local_dir)})
            succeeded = True
            return result
        finally:
            try:
                session.finish(succeeded=succeeded)
            finally:
                shutil.rmtree(session.local_dir, ignore_errors=True)

    return run_with_checkpoint


def delete_trial_checkpoints(
    result: Mapping[str, Any],
    which: str | None,
    *,
    context: Context,
    checkpoint: str | None = None,
    checkpoint_conn_id: str | None = None,
) -> int:
    """
    After a sweep's selection, delete the checkpoints of its losers (``"losers"``) or of every trial (``"all"``).

    Failures to delete are warnings: the selection stands. Returns the trials whose checkpoint was deleted.
    """
    if which is None:
        return 0
    settings = CheckpointOptions.from_args(
        checkpoint=checkpoint, checkpoint_conn_id=checkpoint_conn_id
    ).resolve()
    if settings is None:
        log.warning("delete_checkpoints=%r, but no checkpoint URI is set: nothing to delete", which)
        return 0
    from airflow_mlops_provider.checkpoints.session import CheckpointSession

    ti = context["ti"]
    best = str((result.get("best") or {}).get("trial_id"))
    trial_ids = sorted(
        {str(r["trial_id"]) for r in result.get("leaderboard") or [] if r.get("trial_id") is not None}
    )
    doomed = [t for t in trial_ids if which == "all" or t != best]
    deleted = 0
    for trial_id in doomed:
        session = CheckpointSession(settings, trial_prefix(ti.dag_id, ti.run_id, trial_id), log=log)
        try:
            if session.delete(reason=f"delete_checkpoints={which!r}"):
                deleted += 1
        except Exception as err:  # the selection stands; a leftover checkpoint only costs space
            log.warning("Could not delete the checkpoint of trial %s: %s", trial_id, err)
    log.info(
        "Deleted the checkpoints of %d of %d trial(s) (delete_checkpoints=%r%s)",
        deleted,
        len(doomed),
        which,
        f"; kept the best, {best}" if which == "losers" else "",
    )
    return deleted
