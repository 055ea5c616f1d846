"""Ready-made tasks, so a sweep reads as three lines in a DAG::

    @trial_task
    def train(lr: float, depth: int) -> dict:
        ...
        return {"loss": loss}


    @dag(params=sweep_params(search_space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}}))
    def my_sweep():
        batches = plan_sweep()  # reads search_space, n_trials, seed... from the DAG params
        results = train.expand_kwargs(batches)  # one mapped task per batch
        select_best_trial(results, batches)  # reads metric and mode from the DAG params

Configuration errors (a bad space, an unknown mode, a missing metric) raise
``AirflowFailException`` so Airflow does not retry them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import SweepError
from airflow_mlops_provider.sweeps.batching import flatten_results, materialized
from airflow_mlops_provider.sweeps.plan import (
    BATCH_KEY_PREFIX,
    PLAN_KEY,
    STRATEGIES,
    TRIALS_KEY,
    dag_params,
    pick,
    plan_sweep,
    plan_trials,
)
from airflow_mlops_provider.sweeps.runner import python_trial_runner, run_batch, trials_of
from airflow_mlops_provider.sweeps.select import select_best
from airflow_mlops_provider.sweeps.space import make_trial

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BATCH_KEY_PREFIX",
    "PLAN_KEY",
    "STRATEGIES",
    "TRIALS_KEY",
    "plan_sweep",
    "current_records",
    "finish_selection",
    "plan_trials",
    "select_best_trial",
    "trial_task",
]

log = logging.getLogger(__name__)


def trial_task(python_callable: Callable[..., Any] | None = None, **task_kwargs: Any) -> Any:
    """
    Turn a per-trial function into a task that runs one batch of trials (or one trial).

    The function is called with the trial's parameters as keyword arguments (plus ``trial_id``,
    ``resources`` and ``mlflow_run_id`` when it names them) and returns a dict of metrics
    (numbers; anything else under ``"outputs"``). An exception fails that trial only: it is
    recorded and the batch goes on. With tracking (see :func:`plan_sweep`) each trial is an
    MLflow child run. The task returns the batch's records; expand it with
    ``.expand_kwargs(plan_sweep())`` (batches) or with the trials of ``trials_from_grid``
    directly (one trial per task, untracked).

    :param python_callable: The per-trial function (when used as ``@trial_task``).
    :param task_kwargs: Passed to ``@task`` (``task_id``, ``retries``, ``pool``, ...), except the
        checkpoint arguments (``checkpoint``, ``checkpoint_interval``, ``checkpoint_max_bytes``,
        ``checkpoint_conn_id``): each trial's checkpoint is kept per ``trial_id`` (see
        :mod:`airflow_mlops_provider.sweeps.checkpoints`).
    """

    from airflow_mlops_provider.sweeps.checkpoints import pop_checkpoint_options, with_trial_checkpoints

    checkpoint = pop_checkpoint_options(task_kwargs)

    def decorate(fn: Callable[..., Any]) -> Any:
        runner = python_trial_runner(fn)

        def run_batch_task(
            batch: dict[str, Any] | None = None,
            trials: list[dict[str, Any]] | None = None,
            trial_id: str | None = None,
            hparams: dict[str, Any] | None = None,
            resources: dict[str, Any] | None = None,
        ) -> list[dict[str, Any]]:
            context = _current_context_or_none() if batch is None else get_current_context()
            if batch is not None:
                trials = trials_of(batch, context)
            if trials is None:
                if hparams is None:
                    raise AirflowFailException(
                        f"{fn.__name__} needs 'batch' (from plan_sweep), 'trials' or 'hparams' (one trial), got none"
                    )
                trial = make_trial(hparams, resources)
                if trial_id is not None:
                    trial["trial_id"] = trial_id
                trials = [trial]
            run_one = with_trial_checkpoints(runner, checkpoint, context, log)
            return run_batch(
                run_one, trials=trials, context=context if batch is not None else None, log=log, ref=batch
            )

        run_batch_task.__name__ = fn.__name__
        run_batch_task.__qualname__ = fn.__qualname__
        run_batch_task.__doc__ = fn.__doc__
        run_batch_task.__module__ = fn.__module__
        decorated = task(**task_kwargs)(run_batch_task)
        # halving_sweep(delete_checkpoints=...) deletes the trials' checkpoints where they are.
        decorated.checkpoint_options = checkpoint
        return decorated

    if python_callable is not None:
        return decorate(python_callable)
    return decorate


def _current_context_or_none() -> Any:
    """The running task's context; None when called outside a task (a trial function run directly)."""
    try:
        return get_current_context()
    except RuntimeError:
        return None


def _plan_of(planned: Any, context: Any) -> dict[str, Any] | None:
    """Return the ``sweep_plan`` XCom of the sweep's ``plan_sweep`` (found through ``planned`` or upstream)."""
    ti = context["ti"]
    sources: list[tuple[str, int]] = []
    for item in planned or []:
        ref = item.get("batch") if isinstance(item, dict) else None
        if isinstance(ref, dict) and (ref["task_id"], ref.get("map_index", -1)) not in sources:
            sources.append((ref["task_id"], ref.get("map_index", -1)))
    if not sources:
        task_obj = context["task"]
        upstream = sorted(task_obj.upstream_task_ids)
        if hasattr(task_obj, "get_flat_relative_ids"):
            upstream += sorted(set(task_obj.get_flat_relative_ids(upstream=True)) - set(upstream))
        sources = [(task_id, -1) for task_id in upstream]
    for task_id, map_index in sources:
        plan = ti.xcom_pull(task_ids=task_id, key=PLAN_KEY, map_indexes=map_index)
        if plan is not None:
            return plan
    return None


def _inline_trials(planned: Any) -> list[dict[str, Any]] | None:
    """Return planned trials given inline (batches or trials, not ``plan_sweep`` references)."""
    if planned is None:
        return None
    trials: list[dict[str, Any]] = []
    for item in planned:
        if isinstance(item, dict) and "batch" not in item:
            trials.extend(item.get("trials", [item]))
        elif not isinstance(item, dict):
            trials.extend(item)
    return trials or None


# ``all_done``, not ``all_done_min_one_success``: when every trial is cached, the trial task maps
# to nothing and is skipped, and that rule skips its downstream on any skipped upstream.
def current_records(results: list[Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Return this plan's records: the trial tasks' records of planned, uncached trials, then the cached ones.

    A cleared DAG run whose trials are now all cached maps its trial task to fewer (or no)
    instances; the results of the instances it no longer has are stale and dropped.
    """
    cached = list(plan.get("cached") or [])
    planned = {t["trial_id"] for t in plan.get("trials") or []}
    resolved = {r.get("trial_id") for r in cached}
    live: dict[Any, dict[str, Any]] = {}
    for record in flatten_results(results):
        trial_id = record.get("trial_id")
        if trial_id in planned and trial_id not in resolved:
            live[trial_id] = record
    return [*live.values(), *cached]


@task(trigger_rule="all_done", multiple_outputs=False)
def select_best_trial(
    results: Any,
    planned: Any = None,
    metric: str | None = None,
    mode: str | None = None,
    min_success_ratio: float | None = None,
    delete_checkpoints: str | None = None,
    checkpoint: str | None = None,
    checkpoint_conn_id: str | None = None,
) -> dict[str, Any]:
    """
    Pick the best trial of a sweep and return it with the leaderboard (see ``select_best``).

    It runs once all trial tasks are done, even when some failed as a whole or, every trial
    being cached, the trial task was skipped; the plan of
    :func:`plan_sweep` (found through ``planned`` or upstream) makes their trials count as
    failed and adds the cached trials. Works on the records of Python and container trials.
    With tracking, the leaderboard (JSON and CSV) and the best trial's id and metric are logged
    on the sweep's MLflow run, which is then ended.

    :param results: The trial task's output (a list of per-batch lists).
    :param planned: The batches from :func:`plan_sweep`, optional.
    :param metric: The metric; defaults to the ``metric`` DAG param. (templated)
    :param mode: ``"min"`` or ``"max"``; defaults to the ``mode`` DAG param, then ``"min"``. (templated)
    :param min_success_ratio: Defaults to the ``min_success_ratio`` DAG param, then 0.5. (templated)
    :param delete_checkpoints: After the selection, delete the trials' checkpoints: ``"losers"``
        (all but the best) or ``"all"``; None keeps them.
    :param checkpoint: The trials' checkpoint URI; default ``[mlops] checkpoint_uri``.
    :param checkpoint_conn_id: Its ``aws`` connection; default ``[mlops] checkpoint_conn_id``.
    """
    from airflow_mlops_provider.sweeps.checkpoints import check_delete_checkpoints, delete_trial_checkpoints

    try:
        check_delete_checkpoints(delete_checkpoints)
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    context = get_current_context()
    params = dag_params()
    plan = _plan_of(planned, context)
    records = materialized(results)
    if plan is None and not records:
        raise AirflowFailException(
            "select_best_trial found no sweep plan and no trial results: did plan_sweep or every trial task fail?"
        )
    expected = _inline_trials(planned)
    tracking = None
    if plan is not None:
        records = current_records(records, plan)
        expected = plan.get("trials")
        tracking = plan.get("tracking")
    metric = pick(metric, params, "metric", plan.get("metric") if plan else None)
    mode = pick(mode, params, "mode", (plan or {}).get("mode") or "min")
    ratio = pick(min_success_ratio, params, "min_success_ratio", 0.5)
    result = finish_selection(
        lambda: select_best(
            records, metric=metric, mode=mode, min_success_ratio=ratio, expected_trials=expected
        ),
        tracking,
        metric=metric,
        mode=mode,
    )
    delete_trial_checkpoints(
        result,
        delete_checkpoints,
        context=context,
        checkpoint=checkpoint,
        checkpoint_conn_id=checkpoint_conn_id,
    )
    return result


def finish_selection(
    select: Callable[[], dict[str, Any]],
    tracking: Mapping[str, Any] | None,
    *,
    metric: Any,
    mode: Any,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """
    Run a sweep's selection, count its cached trials, and log its leaderboard (or its error) to MLflow.

    :param select: Returns ``select_best``'s result; raises ``ValueError`` (a configuration
        error: ``AirflowFailException``) or ``SweepError`` (too few successes, raised as is).
    :param tracking: The plan's ``TrackingConfig.as_dict()``; the sweep's run is ended.
    :param metric: The metric, for the error's leaderboard.
    :param mode: The mode, for the error's leaderboard.
    :param extra: More keys for the result, before it is logged.
    """
    tracker = None
    if tracking:
        from airflow_mlops_provider.sweeps.tracking import SweepTracker, TrackingConfig

        tracker = SweepTracker(TrackingConfig.from_dict(tracking), log=log)
    try:
        result = select()
    except (ValueError, SweepError) as err:
        if tracker is not None and tracker.enabled:
            tracker.log_leaderboard({"error": str(err), "metric": metric, "mode": mode}, succeeded=False)
        if isinstance(err, SweepError):
            raise
        raise AirflowFailException(str(err)) from err
    result["n_cached"] = sum(1 for r in result["leaderboard"] if r.get("cached"))
    result.update(extra or {})
    if tracker is not None and tracker.enabled:
        tracker.log_leaderboard(result)
    return result
