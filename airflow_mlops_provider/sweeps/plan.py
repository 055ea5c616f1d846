"""Plan a sweep: trials from the search space(s), the sweep's MLflow run, cached trials, batches.

:func:`plan_sweep` is the first task of every sweep, whatever runs its trials (Python functions
or containers). Trials whose result MLflow already holds for the same ``trial_id`` and
``cache_key`` are resolved here, so they cost no mapped task and no container.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import RESOURCE_FIELDS
from airflow_mlops_provider.sweeps.batching import batch_trials
from airflow_mlops_provider.sweeps.planning import (
    BATCH_KEY_PREFIX,
    CACHE_MODES,
    DEFAULT_CACHE_KEY,
    PLAN_KEY,
    TRACKING_MODES,
    TRIALS_KEY,
    choice_of,
    dag_params,
    pick,
    publish_plan,
    rendered_cache_key,
    sweep_spaces,
    tracking_config,
)
from airflow_mlops_provider.sweeps.select import MODES
from airflow_mlops_provider.sweeps.space import trials_from_grid, trials_from_random

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BATCH_KEY_PREFIX",
    "CACHE_MODES",
    "DEFAULT_CACHE_KEY",
    "PLAN_KEY",
    "STRATEGIES",
    "TRACKING_MODES",
    "TRIALS_KEY",
    "plan_sweep",
    "plan_trials",
    "publish_plan",
]

log = logging.getLogger(__name__)

#: How ``plan_sweep`` turns a space into trials.
STRATEGIES = ("grid", "random")


def _trials_of_space(space: Any, strategy: str, n_trials: int | None, seed: int | None, base: dict[str, Any]):
    if strategy == "grid":
        return trials_from_grid(space, resources=base or None)
    if n_trials is None:
        raise ValueError("n_trials must be given for a random sweep, got None")
    return trials_from_random(space, n_trials, 0 if seed is None else seed, resources=base or None)


def planned_trials(
    search_space: Mapping[str, Any] | str | Sequence[Mapping[str, Any] | str],
    *,
    strategy: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    gpus_per_trial: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Return the trials of one space, or the union of several (``n_trials`` drawn from each).

    Trials that two spaces share (same ``trial_id``) run once. Raises ``ValueError``.
    """
    if strategy is None:
        strategy = "random" if n_trials is not None else "grid"
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if resources is not None and not isinstance(resources, Mapping):
        raise ValueError(f"resources must be a mapping of {list(RESOURCE_FIELDS)}, got {resources!r}")
    base = dict(resources or {})
    if gpus_per_trial:
        base["gpus"] = gpus_per_trial
    spaces = list(search_space) if isinstance(search_space, (list, tuple)) else [search_space]
    if not spaces:
        raise ValueError("search_space must be a space or a non-empty list of spaces, got []")
    trials: dict[str, dict[str, Any]] = {}
    for space in spaces:
        for trial in _trials_of_space(space, strategy, n_trials, seed, base):
            trials.setdefault(trial["trial_id"], trial)
    return list(trials.values())


def plan_trials(
    search_space: Mapping[str, Any] | str | Sequence[Mapping[str, Any] | str],
    *,
    strategy: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    max_parallel_tasks: int | None = None,
    gpus_per_trial: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Return the batches of a sweep (see :func:`plan_sweep`); plain function, raises ``ValueError``.

    :param search_space: The space, or a list of spaces; see :mod:`airflow_mlops_provider.sweeps.space`.
    :param strategy: ``"grid"`` or ``"random"``; defaults to random when ``n_trials`` is set.
    :param n_trials: Number of random trials (per space).
    :param seed: Seed of the random draw (default 0).
    :param max_parallel_tasks: Most mapped task instances wanted.
    :param gpus_per_trial: GPUs for every trial (sets ``resources["gpus"]``).
    :param resources: Resources for every trial (a ``Resources.from_dict`` dict).
    """
    trials = planned_trials(
        search_space,
        strategy=strategy,
        n_trials=n_trials,
        seed=seed,
        gpus_per_trial=gpus_per_trial,
        resources=resources,
    )
    return batch_trials(trials, max_parallel_tasks=max_parallel_tasks)


@task
def plan_sweep(
    search_space: Mapping[str, Any] | str | None = None,
    strategy: str | None = None,
    n_trials: int | None = None,
    seed: int | None = None,
    max_parallel_tasks: int | None = None,
    gpus_per_trial: int | None = None,
    resources: Mapping[str, Any] | None = None,
    search_space_params: Sequence[str] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    mlflow_conn_id: str | None = "mlflow_default",
    experiment_name: str | None = None,
    tracking: str = "required",
    cache: str | None = None,
    cache_key: str | None = None,
    cache_failures: bool = True,
) -> list[dict[str, Any]]:
    """
    Plan a sweep: its trials, its MLflow run, its cached trials, and batches for ``.expand_kwargs()``.

    Each batch's trials are stored in their own XCom (``sweep_batch_<i>``) and the task returns
    small references ``[{"batch": {...}}, ...]``, so each mapped trial task reads only its own
    batch. The whole plan (every trial, the cached records, the tracking settings) is stored
    under ``sweep_plan`` for ``select_best_trial``. The batch count respects the live
    ``[core] max_map_length``: with more trials than that, each mapped task runs several in turn.

    Each argument left as None is read from the DAG param of the same name (the
    :func:`airflow_mlops_provider.params.sweep_params` names), so a run triggered from the UI
    uses the form's values.

    With tracking, the sweep (one DAG run) is an MLflow parent run in ``experiment_name`` and
    each trial a child run. A trial whose ``trial_id`` and ``cache_key`` already have a finished
    run with ``metric`` is not run again (nor a trial that failed by itself, with
    ``cache_failures``): it is resolved here and marked ``cached``.

    :param search_space: The space (mapping or JSON text), or a list of spaces. (templated)
    :param strategy: ``"grid"`` or ``"random"``. (templated)
    :param n_trials: Number of random trials (per space). (templated)
    :param seed: Seed of the random draw. (templated)
    :param max_parallel_tasks: Most mapped task instances wanted. (templated)
    :param gpus_per_trial: GPUs for every trial. (templated)
    :param resources: Resources for every trial. (templated)
    :param search_space_params: Names of DAG params holding spaces to sweep together (each may
        hold a constant such as ``"family": "A"`` to tell its trials apart).
    :param metric: The metric a cached result must hold; DAG param ``metric``. (templated)
    :param mode: ``"min"`` or ``"max"``, for the best-so-far in the logs; DAG param ``mode``. (templated)
    :param mlflow_conn_id: The ``mlflow`` connection; None turns tracking and caching off. When
        the default ``mlflow_default`` is not defined, tracking is off (and logged so).
    :param experiment_name: The MLflow experiment (created when missing); default the dag_id. (templated)
    :param tracking: ``"required"`` (default): MLflow down fails the task, which Airflow retries;
        ``"best_effort"``: log a warning and go on untracked; ``"off"``.
    :param cache: ``"off"``, ``"read"`` or ``"readwrite"``; DAG param ``cache``, else
        ``"readwrite"``. (templated)
    :param cache_key: What else a cached result must share besides the trial's parameters: the
        data version, the image digest or code version; DAG param ``cache_key``, else
        ``"{{ run_id }}"``. Rendered; an empty key fails. (templated)
    :param cache_failures: Reuse a trial's own failure (exit code, bad result) too. Default True.
    """
    context = get_current_context()
    params = dag_params()
    space = sweep_spaces(search_space, search_space_params, params)
    metric = pick(metric, params, "metric")
    mode = choice_of("mode", pick(mode, params, "mode", "min"), MODES)
    tracking = choice_of("tracking", tracking, TRACKING_MODES)
    cache = choice_of("cache", pick(cache, params, "cache", "readwrite"), CACHE_MODES)
    key = rendered_cache_key(pick(cache_key, params, "cache_key", DEFAULT_CACHE_KEY), context)
    strategy = pick(strategy, params, "strategy")
    n_trials = pick(n_trials, params, "n_trials")
    seed = pick(seed, params, "seed")
    try:
        trials = planned_trials(
            space,
            strategy=strategy,
            n_trials=n_trials,
            seed=seed,
            gpus_per_trial=pick(gpus_per_trial, params, "gpus_per_trial"),
            resources=resources,
        )
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    max_parallel = pick(max_parallel_tasks, params, "max_parallel_tasks")
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise AirflowFailException(f"max_parallel_tasks must be an integer >= 1, got {max_parallel!r}")
    started = tracking_config(
        mlflow_conn_id=mlflow_conn_id,
        tracking=tracking,
        experiment_name=experiment_name,
        cache=cache,
        cache_key=key,
        cache_failures=cache_failures,
        metric=metric,
        context=context,
        params_to_log={
            "search_space": space,
            "strategy": strategy,
            "n_trials": n_trials,
            "seed": seed,
            "metric": metric,
            "mode": mode,
            "cache": cache,
            "cache_key": key[:250],
        },
    )
    cached: dict[str, dict[str, Any]] = {}
    config_dict = None
    if started is not None:
        tracker, config = started
        config_dict = config.as_dict()
        if cache != "off" and metric:
            cached = tracker.cached_results(trials)
    return publish_plan(
        context,
        trials,
        cached,
        tracking=config_dict,
        metric=metric,
        mode=mode,
        max_parallel_tasks=max_parallel,
    )
