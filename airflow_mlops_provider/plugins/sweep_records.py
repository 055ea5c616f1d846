"""The records of a DAG run's sweep, and where each ran, from the run's XCom rows.

A sweep stores, per plan task (one, or one per round/rung): ``sweep_plan`` (every trial, the cached
records, the tracking settings) and ``sweep_batch_<i>`` (the trials of batch ``i``, which the
mapped trial task's map index ``i`` runs); each mapped trial task returns its batch's records;
the select task returns the verdict with the leaderboard. :func:`classify` sorts the rows into
these, :func:`trial_tasks` finds which mapped task ran each plan's batches, and
:func:`fallback_records` rebuilds every planned trial's record when there is no verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops_provider.plugins.charts import is_number

__all__ = ["PLAN_KEY", "classify", "fallback_records", "rank_records", "stage_of", "trial_tasks"]

PLAN_KEY = "sweep_plan"
BATCH_KEY_PREFIX = "sweep_batch_"
#: Task-instance states of a trial task that has not finished yet.
UNFINISHED = {
    "running",
    "queued",
    "scheduled",
    "deferred",
    "up_for_retry",
    "up_for_reschedule",
    "restarting",
    "None",
}


def is_records(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(r, Mapping) and "trial_id" in r and "status" in r for r in value)
    )


def stage_of(record: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return (str(record.get("trial_id")), record.get("round"), record.get("rung"))


def rank_records(records: Sequence[Mapping[str, Any]], metric: str | None, mode: str) -> list[dict[str, Any]]:
    """
    Rank records as ``select_best`` does, without its checks: best first, then the rest by trial id.

    A record whose metric is missing or not a number is not ranked; higher rungs rank first.
    """
    sign = -1 if mode == "max" else 1
    scored, rest = [], []
    for record in records:
        value = (record.get("metrics") or {}).get(metric) if metric else None
        if record.get("status") == "success" and value is not None and is_number(value):
            scored.append(((-(record.get("rung") or 0), sign * value, str(record.get("trial_id"))), record))
        else:
            rest.append(record)
    scored.sort(key=lambda pair: pair[0])
    ranked = [{**record, "rank": rank} for rank, (_, record) in enumerate(scored, start=1)]
    rest.sort(key=lambda r: str(r.get("trial_id")))
    return ranked + [{**record, "rank": None} for record in rest]


def classify(xcoms: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    plans: dict[str, Any] = {}
    batches: dict[tuple[str, str], int] = {}
    selects: list[dict[str, Any]] = []
    located: dict[tuple[Any, Any, Any], tuple[str, int, dict[str, Any]]] = {}
    for row in xcoms:
        key, value, task_id = row["key"], row["value"], row["task_id"]
        map_index = row.get("map_index", -1)
        if key == PLAN_KEY and isinstance(value, Mapping):
            plans[task_id] = value
        elif key.startswith(BATCH_KEY_PREFIX) and isinstance(value, list):
            index = int(key[len(BATCH_KEY_PREFIX) :]) if key[len(BATCH_KEY_PREFIX) :].isdigit() else -1
            for trial in value:
                if isinstance(trial, Mapping):
                    batches[(task_id, str(trial.get("trial_id")))] = index
        elif key == "return_value":
            if isinstance(value, Mapping) and isinstance(value.get("leaderboard"), list) and map_index == -1:
                selects.append({"task_id": task_id, **value})
            elif is_records(value):
                for record in value:
                    located[stage_of(record)] = (task_id, map_index, dict(record))
    return {"plans": plans, "batches": batches, "selects": selects, "located": located}


def group_of(task_id: str) -> str:
    return task_id.rsplit(".", 1)[0] if "." in task_id else ""


def trial_tasks(found: Mapping[str, Any], tis: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Return ``{plan task id: trial task id}``: the mapped task that ran each plan's batches."""
    plan_of_trial = {trial_id: plan for (plan, trial_id) in found["batches"]}
    result: dict[str, str] = {}
    for (trial_id, _, _), (task_id, map_index, _) in found["located"].items():
        plan = plan_of_trial.get(trial_id)
        if plan is not None and map_index >= 0 and group_of(task_id) == group_of(plan):
            result.setdefault(plan, task_id)
    mapped = {ti["task_id"] for ti in tis if ti.get("map_index", -1) >= 0}
    for plan in found["plans"]:
        if plan not in result:
            candidates = sorted(t for t in mapped if t != plan and group_of(t) == group_of(plan))
            if len(candidates) == 1:
                result[plan] = candidates[0]
    return result


def fallback_records(
    found: Mapping[str, Any],
    tis_by_key: Mapping[tuple[str, int], Any],
    trial_tasks: Mapping[str, str],
    run_finished: bool,
) -> list[dict[str, Any]]:
    """Every planned trial's record, or a failed/pending stand-in; a trial's highest rung is kept."""
    records: dict[str, dict[str, Any]] = {}
    for plan_task, plan in found["plans"].items():
        cached = {str(r.get("trial_id")): r for r in plan.get("cached") or []}
        for trial in plan.get("trials") or []:
            trial_id = str(trial.get("trial_id"))
            record = found["located"].get(stage_of(trial), (None, -1, None))[2]
            if record is None and trial_id in cached:
                record = {**cached[trial_id], "cached": True}
            if record is None:
                index = found["batches"].get((plan_task, trial_id), -1)
                ti = tis_by_key.get((trial_tasks.get(plan_task, ""), index)) or {}
                state = str(ti.get("state"))
                if not run_finished and state in UNFINISHED:
                    record = {**trial, "status": "running" if state == "running" else "pending"}
                else:
                    record = {**trial, "status": "failed", "error": "no result: its task did not finish"}
            previous = records.get(trial_id)
            if previous is None or (record.get("rung") or 0) >= (previous.get("rung") or 0):
                records[trial_id] = dict(record)
    return list(records.values())
