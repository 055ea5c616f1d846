"""The last task of a staged sweep (rounds or rungs): the best trial and the leaderboard of every stage."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.sweeps.planning import PLAN_KEY, dag_params, pick
from airflow_mlops_provider.sweeps.select import select_best
from airflow_mlops_provider.sweeps.tasks import finish_selection

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["select_best_of_stages"]

log = logging.getLogger(__name__)

#: The kinds of staged sweep.
KINDS = ("rounds", "rungs")


def _stage_records(context: Any, plan_task_ids: Sequence[str], results: Sequence[Any]):
    from airflow_mlops_provider.sweeps.stages import stage_records

    ti = context["ti"]
    plans = [ti.xcom_pull(task_ids=task_id, key=PLAN_KEY) for task_id in plan_task_ids]
    if plans and plans[0] is None:
        raise AirflowFailException(
            f"the first stage's plan ({plan_task_ids[0]}) did not run or failed: no trial was planned"
        )
    stages = []
    for plan, output in zip(plans, results):
        if plan is None:  # a later stage's plan failed: its trials never ran
            break
        stages.append(stage_records(plan, output))
    return plans[0], stages


@task(trigger_rule="all_done", multiple_outputs=False)
def select_best_of_stages(
    results: Sequence[Any],
    plan_task_ids: Sequence[str],
    kind: str = "rounds",
    metric: str | None = None,
    mode: str | None = None,
    min_success_ratio: float | None = None,
    delete_checkpoints: str | None = None,
    checkpoint: str | None = None,
    checkpoint_conn_id: str | None = None,
) -> dict[str, Any]:
    """
    Pick the best trial of a staged sweep and return it with the leaderboard of every stage.

    For rounds, every trial of every round competes (each record carries its ``round``). For
    rungs (successive halving), a trial's row is its last rung, and the trials of higher rungs
    rank first (the best is the best at the highest rung reached); each row lists the trial's
    metric per rung under ``rungs``. With tracking, the leaderboard is logged on the sweep's
    MLflow run, which is then ended.

    :param results: Each stage's trial task output.
    :param plan_task_ids: Each stage's plan task.
    :param kind: ``"rounds"`` or ``"rungs"``.
    :param metric: The metric; default the plan's (the ``metric`` DAG param).
    :param mode: ``"min"`` or ``"max"``; default the plan's.
    :param min_success_ratio: Default the ``min_success_ratio`` DAG param, then 0.5. For rungs,
        the share of the first rung's trials.
    :param delete_checkpoints: ``"losers"``, ``"all"`` or None, as for ``select_best_trial``.
    :param checkpoint: The trials' checkpoint URI; default ``[mlops] checkpoint_uri``.
    :param checkpoint_conn_id: Its ``aws`` connection.
    """
    from airflow_mlops_provider.sweeps.checkpoints import check_delete_checkpoints, delete_trial_checkpoints

    try:
        check_delete_checkpoints(delete_checkpoints)
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    from airflow_mlops_provider.sweeps.halving import rank_rungs

    context = get_current_context()
    params = dag_params()
    first, stages = _stage_records(context, plan_task_ids, results)
    metric = pick(metric, params, "metric", first.get("metric"))
    mode = pick(mode, params, "mode", first.get("mode") or "min")
    ratio = pick(min_success_ratio, params, "min_success_ratio", 0.5)

    def select() -> dict[str, Any]:
        if kind == "rungs":
            return rank_rungs(stages, metric=metric, mode=mode, min_success_ratio=ratio)
        records = [r for stage in stages for r in stage]
        return select_best(records, metric=metric, mode=mode, min_success_ratio=ratio)

    extra = {"n_stages": len([s for s in stages if s]), "kind": kind}
    result = finish_selection(select, first.get("tracking"), metric=metric, mode=mode, extra=extra)
    best = result["best"]
    where = f"rung {best.get('rung', 0) + 1}" if kind == "rungs" else f"round {best.get('round', 0) + 1}"
    log.info(
        "Best trial %s (%s): %s=%s",
        best.get("trial_id"),
        where,
        metric,
        (best.get("metrics") or {}).get(metric),
    )
    delete_trial_checkpoints(
        result,
        delete_checkpoints,
        context=context,
        checkpoint=checkpoint,
        checkpoint_conn_id=checkpoint_conn_id,
    )
    return result
