"""What adaptive sweeps (rounds) and successive halving (rungs) share: the stages of task groups.

A staged sweep is a chain of task groups fixed when the DAG is parsed, ``round_1`` ...
``round_N`` (or ``rung_1`` ...), each holding a ``plan`` task and the trial task mapped over its
batches, then one ``select_best`` task. Each ``plan`` reads the earlier stages' plans and
results; the trial tasks are the ones of the sweeps issue (``@trial_task`` functions or
``container_trials``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup, XComArg
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.sweeps.batching import materialized
from airflow_mlops_provider.sweeps.planning import PLAN_KEY
from airflow_mlops_provider.sweeps.tasks import current_records

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["build_stages", "check_count", "check_dag_param", "stage_plans", "stage_records"]

#: The plan task in each stage's group.
PLAN_TASK_ID = "plan"


def check_count(name: str, value: Any, maximum: int | None = None, *, built: bool = True) -> int:
    """
    Return ``value`` when it is an integer from 1 to ``maximum``; raise ``ValueError`` naming it.

    :param built: ``maximum`` is what the DAG builds (said in the message), not a library limit.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum and value > maximum):
        why = " (the most this DAG builds)" if built else ""
        bounds = ">= 1" if not maximum else f"from 1 to {maximum}{why}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return value


def run_count(name: str, value: Any, maximum: int, *, built: bool = True) -> int:
    """:func:`check_count` at run time: a bad count from the form fails the task without retries."""
    try:
        return check_count(name, value, maximum, built=built)
    except ValueError as err:
        raise AirflowFailException(str(err)) from err


def check_dag_param(operator: Any, name: str, built: int, *, default_only: bool = False) -> None:
    """
    Refuse, at parse time, a DAG param ``name`` whose default or maximum is over what the DAG builds.

    :param operator: A task of the DAG (its ``dag.params`` are read).
    :param name: The param (``rounds``, ``trials_per_round``).
    :param built: The most the DAG's structure holds.
    :param default_only: Check the param's default only (its maximum may be higher).
    """
    dag = getattr(operator, "dag", None) if operator.has_dag() else None
    if dag is None or name not in dag.params:
        return
    param = dag.params.get_param(name)
    checked = [("default", param.value)]
    if not default_only:
        checked.append(("maximum", param.schema.get("maximum")))
    for what, value in checked:
        if isinstance(value, int) and not isinstance(value, bool) and value > built:
            raise ValueError(
                f"the DAG param {name!r} has {what} {value!r}, more than the {built} this DAG builds; "
                f"raise the sweep's {name} or lower the param's"
            )


def _trial_output(trials: Any, refs: XComArg) -> XComArg:
    """Map the user's trial task over a stage's batches; return its output."""
    if hasattr(trials, "expand_kwargs"):
        out = trials.expand_kwargs(refs)
    elif callable(trials):
        out = trials(refs)
    else:
        raise ValueError(
            f"trials must be a @trial_task function or a callable taking the batches (e.g. a lambda "
            f"calling container_trials), got {trials!r}"
        )
    if hasattr(out, "output") and not isinstance(out, XComArg):
        out = out.output
    if not isinstance(out, XComArg):
        raise ValueError(f"the trial task for the batches must return a task's output (XComArg), got {out!r}")
    return out


def build_stages(
    *,
    trials: Any,
    n_stages: int,
    prefix: str,
    plan: Callable[..., XComArg],
    select: Callable[..., XComArg],
    group_id: str | None,
) -> tuple[XComArg, list[XComArg]]:
    """
    Build ``n_stages`` task groups ``<prefix>_<k>`` and the select task; return its output and the plans.

    :param trials: The trial task (``@trial_task``) or a callable ``(batches) -> XComArg``.
    :param n_stages: How many stages the DAG holds.
    :param prefix: ``"round"`` or ``"rung"``.
    :param plan: ``plan(index, plan_task_ids, previous_results) -> XComArg`` builds a stage's plan task.
    :param select: ``select(plan_task_ids, results) -> XComArg`` builds the final task.
    :param group_id: An outer task group around everything, or None.
    """
    outer = TaskGroup(group_id) if group_id else None
    if outer is not None:
        outer.__enter__()
    try:
        base = f"{group_id}." if group_id else ""
        plan_ids = [f"{base}{prefix}_{k + 1}.{PLAN_TASK_ID}" for k in range(n_stages)]
        # each stage's plan and select are named by the caller: PLAN_TASK_ID, "select_best"
        results: list[XComArg] = []
        plans: list[XComArg] = []
        for index in range(n_stages):
            with TaskGroup(f"{prefix}_{index + 1}"):
                refs = plan(index, plan_ids, list(results))
                plans.append(refs)
                results.append(_trial_output(trials, refs))
        best = select(plan_ids, results)
    finally:
        if outer is not None:
            outer.__exit__(None, None, None)
    return best, plans


def stage_plans(context: Any, plan_task_ids: Sequence[str], upto: int) -> list[dict[str, Any]]:
    """Return the plans of stages ``0 .. upto-1``; a stage whose plan did not run fails the task."""
    ti = context["ti"]
    plans: list[dict[str, Any]] = []
    for index, task_id in enumerate(plan_task_ids[:upto]):
        plan = ti.xcom_pull(task_ids=task_id, key=PLAN_KEY)
        if plan is None:
            raise AirflowFailException(
                f"the plan of stage {index + 1} ({task_id}) did not run or failed; clear it to go on"
            )
        plans.append(plan)
    return plans


def stage_records(plan: Mapping[str, Any], results: Any) -> list[dict[str, Any]]:
    """
    Return one record per planned trial of a stage, in the plan's order (a trial without one failed).

    :param plan: The stage's ``sweep_plan``.
    :param results: The stage's trial task output (per-batch lists).
    """
    by_id = {r.get("trial_id"): r for r in current_records(materialized(results), dict(plan))}
    records = []
    for trial in plan.get("trials") or []:
        record = by_id.get(trial["trial_id"])
        if record is None:
            record = {**trial, "status": "failed", "error": "no result: its task did not finish"}
        records.append(record)
    return records


#: The arguments every staged sweep takes, with their DAG-param fallbacks (None: no param).
COMMON_ARGS = (
    "search_space",
    "search_space_params",
    "strategy",
    "metric",
    "mode",
    "seed",
    "resources",
    "gpus_per_trial",
    "max_parallel_tasks",
    "mlflow_conn_id",
    "experiment_name",
    "tracking",
    "cache",
    "cache_key",
    "cache_failures",
    "min_success_ratio",
)


def resolve(sweep: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """
    Return a staged sweep's settings for this run: static arguments, else DAG params, else defaults.

    :raises AirflowFailException: on a value no retry can fix.
    """
    from airflow_mlops_provider.sweeps.planning import (
        CACHE_MODES,
        DEFAULT_CACHE_KEY,
        TRACKING_MODES,
        choice_of,
        dag_params,
        pick,
        rendered_cache_key,
        sweep_spaces,
    )
    from airflow_mlops_provider.sweeps.select import MODES

    params = dag_params()
    space = sweep_spaces(sweep.get("search_space"), sweep.get("search_space_params"), params)
    if isinstance(space, list):
        if len(space) != 1:
            raise AirflowFailException(
                f"an adaptive sweep searches one space, got {len(space)} (search_space_params="
                f"{sweep.get('search_space_params')!r}); use plan_sweep to sweep several together"
            )
        space = space[0]
    metric = pick(sweep.get("metric"), params, "metric")
    if not isinstance(metric, str) or not metric:
        raise AirflowFailException(
            f"metric must be a non-empty string (the sampler needs it), got {metric!r}"
        )
    seed = pick(sweep.get("seed"), params, "seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AirflowFailException(f"seed must be an integer, got {seed!r}")
    cache = choice_of("cache", pick(sweep.get("cache"), params, "cache", "readwrite"), CACHE_MODES)
    max_parallel = pick(sweep.get("max_parallel_tasks"), params, "max_parallel_tasks")
    if max_parallel is not None:
        max_parallel = run_count("max_parallel_tasks", max_parallel, 0)
    return {
        "search_space": space,
        "metric": metric,
        "mode": choice_of("mode", pick(sweep.get("mode"), params, "mode", "min"), MODES),
        "seed": seed,
        "cache": cache,
        "cache_key": rendered_cache_key(
            pick(sweep.get("cache_key"), params, "cache_key", DEFAULT_CACHE_KEY), context
        ),
        "tracking": choice_of("tracking", sweep.get("tracking", "required"), TRACKING_MODES),
        "max_parallel_tasks": max_parallel,
        "gpus_per_trial": pick(sweep.get("gpus_per_trial"), params, "gpus_per_trial"),
        "params": params,
    }


def trial_resources(sweep: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resources every trial gets: ``resources`` plus ``gpus_per_trial``."""
    base = dict(sweep.get("resources") or {})
    if settings.get("gpus_per_trial"):
        base["gpus"] = settings["gpus_per_trial"]
    return base or None


def plan_stage(
    context: Any,
    sweep: Mapping[str, Any],
    settings: Mapping[str, Any],
    trials: list[dict[str, Any]],
    *,
    sweep_task: str,
    extra: Mapping[str, Any],
    logged: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """
    Track the sweep (one MLflow run for all its stages), resolve cached trials, publish the stage's plan.

    :param trials: The stage's trials, in the order asked.
    :param sweep_task: The first stage's plan task: the sweep's MLflow run is found by it.
    :param extra: Keys for the plan and the batch references (``round``, ``rung``...).
    :param logged: The sweep settings logged as the sweep run's params.
    """
    from airflow_mlops_provider.sweeps.planning import publish_plan, tracking_config

    started = tracking_config(
        mlflow_conn_id=sweep.get("mlflow_conn_id", "mlflow_default"),
        tracking=settings["tracking"],
        experiment_name=sweep.get("experiment_name"),
        cache=settings["cache"],
        cache_key=settings["cache_key"],
        cache_failures=sweep.get("cache_failures", True),
        metric=settings["metric"],
        context=context,
        params_to_log=logged,
        sweep_task=sweep_task,
    )
    cached: dict[str, dict[str, Any]] = {}
    config = None
    if started is not None:
        tracker, config_obj = started
        config = config_obj.as_dict()
        if settings["cache"] != "off" and trials:
            cached = tracker.cached_results(trials)
    return publish_plan(
        context,
        trials,
        cached,
        tracking=config,
        metric=settings["metric"],
        mode=settings["mode"],
        max_parallel_tasks=settings["max_parallel_tasks"],
        extra=extra,
    )
