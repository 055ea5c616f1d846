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

from airflow_mlops_provider.sweeps.batching import batch_trials, live_max_map_length
from airflow_mlops_provider.sweeps.select import run_trials, select_best
from airflow_mlops_provider.sweeps.space import make_trial, trials_from_grid, trials_from_random

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["STRATEGIES", "plan_sweep", "plan_trials", "select_best_trial", "trial_task"]

log = logging.getLogger(__name__)

#: XCom key prefix of the batches ``plan_sweep`` stores, and key of the full trial list.
BATCH_KEY_PREFIX = "sweep_batch_"
TRIALS_KEY = "sweep_trials"
#: How ``plan_sweep`` turns a space into trials.
STRATEGIES = ("grid", "random")


def _dag_params() -> Mapping[str, Any]:
    try:
        return get_current_context().get("params") or {}
    except RuntimeError:  # called outside a running task (a unit test)
        return {}


def _pick(value: Any, params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    if value is not None:
        return value
    found = params.get(key)
    return default if found is None else found


def plan_trials(
    search_space: Mapping[str, Any] | str,
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

    :param search_space: The space; see :mod:`airflow_mlops_provider.sweeps.space`.
    :param strategy: ``"grid"`` or ``"random"``; defaults to random when ``n_trials`` is set.
    :param n_trials: Number of random trials.
    :param seed: Seed of the random draw (default 0).
    :param max_parallel_tasks: Most mapped task instances wanted.
    :param gpus_per_trial: GPUs for every trial (sets ``resources["gpus"]``).
    :param resources: Resources for every trial (a ``Resources.from_dict`` dict).
    """
    if strategy is None:
        strategy = "random" if n_trials is not None else "grid"
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    base = dict(resources or {})
    if gpus_per_trial:
        base["gpus"] = gpus_per_trial
    if strategy == "grid":
        trials = trials_from_grid(search_space, resources=base or None)
    else:
        if n_trials is None:
            raise ValueError("n_trials must be given for a random sweep, got None")
        trials = trials_from_random(
            search_space, n_trials, 0 if seed is None else seed, resources=base or None
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
) -> list[dict[str, Any]]:
    """
    Plan a sweep: build its trials and pack them into batches for ``.expand_kwargs()``.

    Each batch's trials are stored in their own XCom (``sweep_batch_<i>``) and the task returns
    small references ``[{"batch": {...}}, ...]``, so each mapped trial task reads only its own
    batch (a mapped task otherwise loads its upstream's whole list to take one item). The full
    list of trials is stored under ``sweep_trials`` for ``select_best_trial``.

    Each argument left as None is read from the DAG param of the same name (the
    :func:`airflow_mlops_provider.params.sweep_params` names), so a run triggered from the UI
    uses the form's values. The batch count respects the live ``[core] max_map_length``.

    :param search_space: The space (mapping or JSON text). (templated)
    :param strategy: ``"grid"`` or ``"random"``. (templated)
    :param n_trials: Number of random trials. (templated)
    :param seed: Seed of the random draw. (templated)
    :param max_parallel_tasks: Most mapped task instances wanted. (templated)
    :param gpus_per_trial: GPUs for every trial. (templated)
    :param resources: Resources for every trial. (templated)
    """
    params = _dag_params()
    space = _pick(search_space, params, "search_space")
    if space is None:
        raise AirflowFailException("search_space must be given or set as a DAG param, got None")
    try:
        batches = plan_trials(
            space,
            strategy=_pick(strategy, params, "strategy"),
            n_trials=_pick(n_trials, params, "n_trials"),
            seed=_pick(seed, params, "seed"),
            max_parallel_tasks=_pick(max_parallel_tasks, params, "max_parallel_tasks"),
            gpus_per_trial=_pick(gpus_per_trial, params, "gpus_per_trial"),
            resources=resources,
        )
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    ti = get_current_context()["ti"]
    refs: list[dict[str, Any]] = []
    for index, batch in enumerate(batches):
        key = f"{BATCH_KEY_PREFIX}{index}"
        ti.xcom_push(key=key, value=batch["trials"])
        ref: dict[str, Any] = {
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "key": key,
            "size": len(batch["trials"]),
        }
        refs.append({"batch": ref})
    ti.xcom_push(key=TRIALS_KEY, value=[t for b in batches for t in b["trials"]])
    log.info(
        "Planned %d trials in %d batches (max_map_length=%d)",
        sum(r["batch"]["size"] for r in refs),
        len(refs),
        live_max_map_length(),
    )
    return refs


def _pull(ref: Mapping[str, Any], key: str) -> Any:
    value = get_current_context()["ti"].xcom_pull(
        task_ids=ref["task_id"], key=key, map_indexes=ref.get("map_index", -1)
    )
    if value is None:
        raise AirflowFailException(f"no XCom {key!r} from task {ref['task_id']!r}: was the sweep planned?")
    return value


def trial_task(python_callable: Callable[..., Any] | None = None, **task_kwargs: Any) -> Any:
    """
    Turn a per-trial function into a task that runs one batch of trials (or one trial).

    The function is called with the trial's parameters as keyword arguments (plus ``trial_id``
    and ``resources`` when it names them) and returns a dict of metrics. An exception fails
    that trial only: it is recorded and the batch goes on. The task returns the batch's
    records; expand it with ``.expand_kwargs(plan_sweep())`` (batches) or with the trials of
    ``trials_from_grid`` directly (one trial per task).

    :param python_callable: The per-trial function (when used as ``@trial_task``).
    :param task_kwargs: Passed to ``@task`` (``task_id``, ``retries``, ``pool``, ...).
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        def run_batch(
            batch: dict[str, Any] | None = None,
            trials: list[dict[str, Any]] | None = None,
            trial_id: str | None = None,
            hparams: dict[str, Any] | None = None,
            resources: dict[str, Any] | None = None,
        ) -> list[dict[str, Any]]:
            if batch is not None:
                trials = _pull(batch, batch["key"])
            if trials is None:
                if hparams is None:
                    raise AirflowFailException(
                        f"{fn.__name__} needs 'batch' (from plan_sweep), 'trials' or 'hparams' (one trial), got none"
                    )
                trial = make_trial(hparams, resources)
                if trial_id is not None:
                    trial["trial_id"] = trial_id
                trials = [trial]
            return run_trials(fn, trials)

        run_batch.__name__ = fn.__name__
        run_batch.__qualname__ = fn.__qualname__
        run_batch.__doc__ = fn.__doc__
        run_batch.__module__ = fn.__module__
        return task(**task_kwargs)(run_batch)

    if python_callable is not None:
        return decorate(python_callable)
    return decorate


def _planned_trials(planned: Any) -> list[dict[str, Any]] | None:
    """Return the planned trials from ``plan_sweep``'s references (or inline batches/trials)."""
    if planned is None:
        return None
    trials: list[dict[str, Any]] = []
    sources = set()
    for item in planned:
        ref = item.get("batch") if isinstance(item, dict) else None
        if ref is None:
            trials.extend(item.get("trials", [item]) if isinstance(item, dict) else item)
        elif (ref["task_id"], ref.get("map_index", -1)) not in sources:
            sources.add((ref["task_id"], ref.get("map_index", -1)))
            trials.extend(_pull(ref, TRIALS_KEY))
    return trials


@task(trigger_rule="all_done_min_one_success", multiple_outputs=False)
def select_best_trial(
    results: Any,
    planned: Any = None,
    metric: str | None = None,
    mode: str | None = None,
    min_success_ratio: float | None = None,
) -> dict[str, Any]:
    """
    Pick the best trial of a sweep and return it with the leaderboard (see ``select_best``).

    It runs once all trial tasks are done, even when some failed as a whole; pass the
    ``planned`` batches so that their trials count as failed.

    :param results: The trial task's output (a list of per-batch lists).
    :param planned: The batches from :func:`plan_sweep`, optional.
    :param metric: The metric; defaults to the ``metric`` DAG param. (templated)
    :param mode: ``"min"`` or ``"max"``; defaults to the ``mode`` DAG param, then ``"min"``. (templated)
    :param min_success_ratio: Defaults to the ``min_success_ratio`` DAG param, then 0.5. (templated)
    """
    params = _dag_params()
    try:
        return select_best(
            list(results),
            metric=_pick(metric, params, "metric"),
            mode=_pick(mode, params, "mode", "min"),
            min_success_ratio=_pick(min_success_ratio, params, "min_success_ratio", 0.5),
            expected_trials=_planned_trials(planned),
        )
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
