"""Adaptive sweeps: rounds of trials, each round asked of an Optuna sampler (TPE, CMA-ES, QMC).

::

    @trial_task
    def train(lr: float, depth: int) -> dict: ...


    @dag(params=sweep_params(search_space=SPACE, strategy="tpe", rounds=4, trials_per_round=16))
    def tpe_sweep():
        adaptive_sweep(train, rounds=4, trials_per_round=16)

The DAG holds ``rounds`` task groups ``round_1`` ... ``round_N``: each a ``plan`` task, which
tells the sampler every result so far and asks it for the round's trials
(:func:`~airflow_mlops_provider.sweeps.adaptive.suggest_trials`), and the trial task mapped over
its batches. A ``select_best`` task picks the best trial of all rounds. The trigger form may ask
for fewer or smaller rounds (the ``rounds`` and ``trials_per_round`` params) than the DAG builds:
the rounds past the asked number plan nothing and their trial tasks are skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.sweeps.adaptive import ADAPTIVE_STRATEGIES, check_strategy_space
from airflow_mlops_provider.sweeps.staged_select import select_best_of_stages
from airflow_mlops_provider.sweeps.stages import (
    COMMON_ARGS,
    PLAN_TASK_ID,
    build_stages,
    check_count,
    check_dag_param,
    plan_stage,
    resolve,
    run_count,
    stage_plans,
    stage_records,
    trial_resources,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import XComArg

__all__ = ["ADAPTIVE_STRATEGIES", "adaptive_sweep", "plan_round"]

log = logging.getLogger(__name__)

#: Most rounds and trials per round a DAG may build (a guard against typos, not a design limit).
MAX_ROUNDS = 100
MAX_TRIALS_PER_ROUND = 10_000


@task(trigger_rule="all_done")
def plan_round(
    round_index: int, plan_task_ids: Sequence[str], previous: Sequence[Any], sweep: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """
    Plan one round: tell the sampler every earlier round's results, ask for this round's trials.

    Runs once the previous round's trial tasks are done, whatever their state: a failed trial
    task's trials count as failed. Returns the batch references of the round (none for a round
    past the run's ``rounds``).

    :param round_index: This round, from 0.
    :param plan_task_ids: The plan task of every round built.
    :param previous: The trial tasks' outputs of the earlier rounds.
    :param sweep: The sweep's static settings (see :func:`adaptive_sweep`).
    """
    from airflow_mlops_provider.sweeps.adaptive import suggest_trials
    from airflow_mlops_provider.sweeps.planning import pick, publish_plan

    context = get_current_context()
    settings = resolve(sweep, context)
    params = settings["params"]
    built_rounds, built_size = sweep["rounds"], sweep["trials_per_round"]
    strategy = pick(sweep.get("strategy"), params, "strategy", "tpe")
    rounds = run_count("rounds", pick(None, params, "rounds", built_rounds), built_rounds)
    size = run_count("trials_per_round", pick(None, params, "trials_per_round", built_size), built_size)
    try:
        check_strategy_space(settings["search_space"], strategy)
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    extra = {"round": round_index, "n_rounds": rounds, "strategy": strategy}
    logged = {
        "search_space": settings["search_space"],
        "strategy": strategy,
        "rounds": rounds,
        "trials_per_round": size,
        "seed": settings["seed"],
        "metric": settings["metric"],
        "mode": settings["mode"],
        "cache": settings["cache"],
        "cache_key": settings["cache_key"][:250],
    }
    if round_index >= rounds:
        log.info(
            "Round %d of the %d built: skipped, this run asked for %d", round_index + 1, built_rounds, rounds
        )
        # Nothing to track: the select task reads the tracking settings from the first round.
        return publish_plan(
            context,
            [],
            {},
            tracking=None,
            metric=settings["metric"],
            mode=settings["mode"],
            max_parallel_tasks=None,
            extra={**extra, "skipped": True},
        )
    plans = stage_plans(context, plan_task_ids, round_index)
    history = [stage_records(plan, results) for plan, results in zip(plans, previous)]
    try:
        trials = suggest_trials(
            settings["search_space"],
            size,
            strategy=strategy,
            seed=settings["seed"],
            metric=settings["metric"],
            mode=settings["mode"],
            history=history,
            trials_per_round=size,
            resources=trial_resources(sweep, settings),
        )
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    told = sum(len(h) for h in history)
    failed = sum(1 for h in history for r in h if r.get("status") != "success")
    log.info(
        "Round %d/%d: the %s sampler was told %d results (%d failed) and asked for %d trials",
        round_index + 1,
        rounds,
        strategy,
        told,
        failed,
        len(trials),
    )
    return plan_stage(
        context, sweep, settings, trials, sweep_task=plan_task_ids[0], extra=extra, logged=logged
    )


def adaptive_sweep(
    trials: Any,
    *,
    rounds: int,
    trials_per_round: int,
    strategy: str | None = None,
    group_id: str | None = None,
    **kwargs: Any,
) -> XComArg:
    """
    Build an adaptive sweep of ``rounds`` rounds in the DAG being defined; return ``select_best``'s output.

    Each round is a task group ``round_<k>``: a ``plan`` task that asks the sampler for
    ``trials_per_round`` trials (rebuilt from this DAG run's results, seeded, so a cleared round
    asks for the same trials), and ``trials`` mapped over its batches. Failed trials are told to
    the sampler as failed, cached ones as finished. With tracking, the sweep is one MLflow run
    and each trial a child run; the leaderboard records each trial's ``round``.

    Arguments left out are read from the DAG params of the same names (see
    :func:`airflow_mlops_provider.params.sweep_params`), so the trigger form chooses them, within
    what the DAG builds: the form's ``rounds`` and ``trials_per_round`` may be smaller.

    :param trials: A ``@trial_task`` function, or a callable taking the batches and returning
        the mapped trial task's output (``lambda batches: container_trials(task_id="train",
        batches=batches, image=..., command=...)``).
    :param rounds: Rounds the DAG holds (1 to 100).
    :param trials_per_round: Most trials in a round (each round's trials run in parallel).
    :param strategy: ``"tpe"`` (default), ``"cmaes"``, ``"qmc"`` or ``"random"``; DAG param ``strategy``.
    :param group_id: An outer task group around the rounds, or None.
    :param kwargs: What :func:`~airflow_mlops_provider.sweeps.plan.plan_sweep` and
        ``select_best_trial`` take: ``search_space``, ``search_space_params``, ``metric``,
        ``mode``, ``seed``, ``resources``, ``gpus_per_trial``, ``max_parallel_tasks`` (per
        round), ``mlflow_conn_id``, ``experiment_name``, ``tracking``, ``cache``, ``cache_key``,
        ``cache_failures``, ``min_success_ratio``.
    :raises ValueError: at parse time, on a bad static argument.
    """
    rounds = check_count("rounds", rounds, MAX_ROUNDS, built=False)
    trials_per_round = check_count("trials_per_round", trials_per_round, MAX_TRIALS_PER_ROUND, built=False)
    unknown = sorted(set(kwargs) - set(COMMON_ARGS))
    if unknown:
        raise ValueError(f"adaptive_sweep got unknown arguments {unknown}; it takes {list(COMMON_ARGS)}")
    space = kwargs.get("search_space")
    if space is not None and "{{" not in str(space):
        check_strategy_space(space, strategy or "tpe")
    elif strategy is not None and strategy not in ADAPTIVE_STRATEGIES:
        check_strategy_space({"x": [0, 1]}, strategy)  # raises the strategy's message
    sweep: dict[str, Any] = {
        **kwargs,
        "strategy": strategy,
        "rounds": rounds,
        "trials_per_round": trials_per_round,
        "kind": "rounds",
    }

    def plan(index: int, plan_ids: list[str], previous: list[Any]) -> Any:
        out = plan_round.override(task_id=PLAN_TASK_ID)(index, plan_ids, previous, sweep)
        if index == 0:
            operator = getattr(out, "operator", None)
            check_dag_param(operator, "rounds", rounds)
            check_dag_param(operator, "trials_per_round", trials_per_round)
        return out

    def select(plan_ids: list[str], results: list[Any]) -> Any:
        return select_best_of_stages.override(task_id="select_best")(
            results, plan_ids, kind="rounds", min_success_ratio=kwargs.get("min_success_ratio")
        )

    best, _ = build_stages(
        trials=trials, n_stages=rounds, prefix="round", plan=plan, select=select, group_id=group_id
    )
    return best
