"""The parts of planning a sweep that every planner shares: settings, the MLflow run, the plan in XCom.

:func:`~airflow_mlops_provider.sweeps.plan.plan_sweep` (one stage) and the staged sweeps
(:mod:`~airflow_mlops_provider.sweeps.rounds`, :mod:`~airflow_mlops_provider.sweeps.halving`)
read their settings, start the sweep's MLflow run and store their plans through these.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.operators._common import task_identity
from airflow_mlops_provider.sweeps.batching import batch_trials, live_max_map_length

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "BATCH_KEY_PREFIX",
    "CACHE_MODES",
    "DEFAULT_CACHE_KEY",
    "PLAN_KEY",
    "TRACKING_MODES",
    "TRIALS_KEY",
    "choice_of",
    "dag_params",
    "pick",
    "publish_plan",
    "rendered_cache_key",
    "sweep_spaces",
    "tracking_config",
]

log = logging.getLogger("airflow_mlops_provider.sweeps.plan")

#: XCom key prefix of the batches ``plan_sweep`` stores, key of the full trial list, key of the plan.
BATCH_KEY_PREFIX = "sweep_batch_"
TRIALS_KEY = "sweep_trials"
PLAN_KEY = "sweep_plan"
#: ``tracking=``: fail the task when MLflow is down (retried), go on without it, or no tracking.
TRACKING_MODES = ("required", "best_effort", "off")
#: ``cache=``: no cache, reuse cached results only, reuse and record them.
CACHE_MODES = ("off", "read", "readwrite")
#: The cache key when neither the argument nor the ``cache_key`` DAG param gives one: a rerun
#: of the same DAG run reuses its trials; another run (new data) runs them again.
DEFAULT_CACHE_KEY = "{{ run_id }}"


def dag_params() -> Mapping[str, Any]:
    """Return the running task's DAG params ({} outside a task)."""
    try:
        return get_current_context().get("params") or {}
    except RuntimeError:  # called outside a running task (a unit test)
        return {}


def pick(value: Any, params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Return ``value``, else the DAG param ``key``, else ``default``."""
    if value is not None:
        return value
    found = params.get(key)
    return default if found is None else found


def sweep_spaces(
    search_space: Any, search_space_params: Sequence[str] | None, params: Mapping[str, Any]
) -> Any:
    if search_space_params:
        if isinstance(search_space_params, str):
            search_space_params = [search_space_params]
        missing = [name for name in search_space_params if params.get(name) is None]
        if missing:
            raise AirflowFailException(
                f"search_space_params names DAG params that are not set: {missing!r} (params: {sorted(params)})"
            )
        return [params[name] for name in search_space_params]
    space = pick(search_space, params, "search_space")
    if space is None:
        raise AirflowFailException("search_space must be given or set as a DAG param, got None")
    return space


def choice_of(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise AirflowFailException(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def rendered_cache_key(value: Any, context: Any) -> str:
    """Render the cache key (a DAG param or the default may hold a template) and refuse an empty one."""
    text = value
    if isinstance(value, str) and "{{" in value:
        text = context["task"].render_template(value, context)
    if text is None or not str(text).strip():
        raise AirflowFailException(
            f"cache_key rendered empty from {value!r}; give a non-empty key, e.g. the data version "
            "'{{ data_interval_start }}' plus the image digest, or cache='off'"
        )
    return str(text)


def tracking_config(
    *,
    mlflow_conn_id: str | None,
    tracking: str,
    experiment_name: str | None,
    cache: str,
    cache_key: str,
    cache_failures: bool,
    metric: str | None,
    context: Any,
    params_to_log: Mapping[str, Any],
    sweep_task: str | None = None,
) -> Any:
    """Start (or find again) the sweep's MLflow run; return its ``TrackingConfig``, or None when tracking is off."""
    if mlflow_conn_id is None or tracking == "off":
        return None
    from airflow_mlops_provider.sweeps.tracking import SweepTracker, TrackingConfig

    ti = context["ti"]
    name = experiment_name if experiment_name is not None else ti.dag_id
    config = TrackingConfig(
        mlflow_conn_id=mlflow_conn_id,
        experiment_name=name,
        tracking=tracking,
        cache=cache,
        cache_key=None if cache == "off" else hashlib.sha256(cache_key.encode()).hexdigest()[:32],
        cache_key_text=cache_key[:250],
        cache_failures=bool(cache_failures),
        metric=metric,
    )
    tracker = SweepTracker(config, log=log)
    identity = dict(task_identity(context))
    if sweep_task is not None:  # one MLflow run for a sweep planned by several tasks (rounds, rungs)
        identity.update(task_id=sweep_task, map_index="-1")
    started = tracker.start_sweep(identity, dict(params_to_log))
    if started is None or not tracker.enabled:
        return None
    return tracker, started


def publish_plan(
    context: Any,
    trials: list[dict[str, Any]],
    cached: Mapping[str, dict[str, Any]],
    *,
    tracking: dict[str, Any] | None,
    metric: str | None,
    mode: str,
    max_parallel_tasks: int | None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Store a plan's batches and the plan itself in XCom; return the batch references to map over.

    :param context: The planning task's context.
    :param trials: Every trial of the plan, in order.
    :param cached: ``{trial_id: record}`` of the trials the cache resolved (they get no batch).
    :param tracking: The ``TrackingConfig.as_dict()``, or None untracked.
    :param metric: The sweep's metric.
    :param mode: ``"min"`` or ``"max"``.
    :param max_parallel_tasks: Most mapped task instances wanted.
    :param extra: More keys for the ``sweep_plan`` XCom and for each batch reference (a round, a rung).
    """
    to_run = [t for t in trials if t["trial_id"] not in cached]
    batches = batch_trials(to_run, max_parallel_tasks=max_parallel_tasks) if to_run else []
    ti = context["ti"]
    refs: list[dict[str, Any]] = []
    for index, batch in enumerate(batches):
        xcom_key = f"{BATCH_KEY_PREFIX}{index}"
        ti.xcom_push(key=xcom_key, value=batch["trials"])
        ref = {
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "key": xcom_key,
            "size": len(batch["trials"]),
            "index": index,
            "n_batches": len(batches),
            "total": len(trials),
            "metric": metric,
            "mode": mode,
            "tracking": tracking,
            **dict(extra or {}),
        }
        refs.append({"batch": ref})
    ti.xcom_push(key=TRIALS_KEY, value=trials)
    cached_records = [cached[t["trial_id"]] for t in trials if t["trial_id"] in cached]
    ti.xcom_push(
        key=PLAN_KEY,
        value={
            "trials": trials,
            "cached": cached_records,
            "tracking": tracking,
            "metric": metric,
            "mode": mode,
            **dict(extra or {}),
        },
    )
    log.info(
        "Planned %d trials: %d cached (%d of them failed before), %d to run in %d batches (max_map_length=%d)",
        len(trials),
        len(cached_records),
        sum(1 for r in cached_records if r.get("status") != "success"),
        len(to_run),
        len(refs),
        live_max_map_length(),
    )
    for record in cached_records:
        log.info(
            "Trial %s cached: %s from MLflow run %s",
            record.get("trial_id"),
            record.get("metrics") if record.get("status") == "success" else f"failed: {record.get('error')}",
            record.get("mlflow_run_id"),
        )
    return refs
