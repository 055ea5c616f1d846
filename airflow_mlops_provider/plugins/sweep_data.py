"""What a DAG run's sweep found, read back from what the sweep stored: XCom and task instances.

Nothing is re-run and MLflow is not asked: the records the trial tasks returned already carry
each trial's parameters, metrics, error, duration and MLflow run id, and the plan XCom
(``sweep_plan``) carries the tracking settings (connection, experiment). The sources, best first:

1. the select task's return value (``select_best_trial`` or ``select_best_of_stages``): an
   unmapped ``return_value`` XCom holding ``leaderboard``; it is the sweep's verdict;
2. when the sweep failed before (too few successes) or is still running: every plan's trials,
   joined with the records the mapped trial tasks returned, so failed trials and their errors
   still show, and a trial whose task died or has not run yet shows as failed or pending.

Each trial is linked to the task instance that ran it: the mapped trial task's map index is the
batch index of the plan (``sweep_batch_<i>``). :func:`shape_sweep` is pure (tests feed it rows);
:func:`load_sweep` reads the metadata database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlparse

from airflow_mlops_provider.plugins.charts import axis_scale, is_number
from airflow_mlops_provider.plugins.sweep_records import (
    PLAN_KEY,
    classify,
    fallback_records,
    rank_records,
    stage_of,
    trial_tasks,
)

__all__ = ["chart_series", "load_sweep", "rank_records", "shape_sweep", "ti_url"]

log = logging.getLogger(__name__)


def ti_url(prefix: str, dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """Return the Airflow UI path of a task instance (``.../mapped/<i>`` for a mapped one)."""
    parts = [quote(str(p), safe="") for p in (dag_id, run_id, task_id)]
    url = f"{prefix}/dags/{parts[0]}/runs/{parts[1]}/tasks/{parts[2]}"
    return f"{url}/mapped/{int(map_index)}" if map_index is not None and map_index >= 0 else url


def _status(record: Mapping[str, Any]) -> str:
    status = record.get("status")
    if status == "success":
        return "cached" if record.get("cached") else "success"
    return status if status in ("running", "pending") else "failed"


def chart_series(
    rows: Sequence[Mapping[str, Any]], metric: str | None, params: Sequence[str]
) -> list[dict[str, Any]]:
    """
    Return one chart per hyper-parameter that varies: the metric of each successful trial against it.

    :param rows: The leaderboard rows (``params``, ``metric``, ``trial_id``, ``best``).
    :param metric: The sweep's metric.
    :param params: The hyper-parameters, in column order.
    """
    plotted = [r for r in rows if r["status"] in ("success", "cached") and is_number(r.get("metric"))]
    charts = []
    for name in params:
        values = [r["params"].get(name) for r in rows if name in r["params"]]
        if len({repr(v) for v in values}) < 2:
            continue
        points = [
            {"x": r["params"].get(name), "y": r["metric"], "label": r["trial_id"], "best": r["best"]}
            for r in plotted
            if name in r["params"]
        ]
        charts.append(
            {
                "param": name,
                "metric": metric,
                "scale": axis_scale([p["x"] for p in points]) if points else "band",
                "points": points,
            }
        )
    return charts


def _run_url(ui: str, experiment: Any, run: Any) -> str | None:
    if not (ui and experiment and run):
        return None
    return f"{ui}/#/experiments/{quote(str(experiment), safe='')}/runs/{quote(str(run), safe='')}"


class _Context:
    """What every row needs: where each trial ran, the links' bases."""

    def __init__(
        self,
        found: Mapping[str, Any],
        tis: Sequence[Mapping[str, Any]],
        *,
        metric: str | None,
        ui: str,
        experiment: Any,
        ui_prefix: str,
        dag_id: str,
        run_id: str,
    ) -> None:
        self.found = found
        self.tis_by_key = {(ti["task_id"], ti.get("map_index", -1)): ti for ti in tis}
        self.trial_tasks = trial_tasks(found, tis)
        self.plan_of_trial = {trial_id: plan for (plan, trial_id) in found["batches"]}
        self.metric, self.ui, self.experiment = metric, ui, experiment
        self.ui_prefix, self.dag_id, self.run_id = ui_prefix, dag_id, run_id

    def location(self, record: Mapping[str, Any]) -> tuple[str | None, int]:
        task_id, map_index, _ = self.found["located"].get(stage_of(record), (None, -1, None))
        if task_id is None and not record.get("cached"):
            plan = self.plan_of_trial.get(str(record.get("trial_id")))
            if plan in self.trial_tasks:
                task_id, map_index = (
                    self.trial_tasks[plan],
                    self.found["batches"][(plan, str(record.get("trial_id")))],
                )
        return task_id, map_index

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        metric = self.metric
        task_id, map_index = self.location(record)
        row: dict[str, Any] = {
            "rank": record.get("rank"),
            "trial_id": str(record.get("trial_id")),
            "params": dict(record.get("hparams") or {}),
            "metric": (record.get("metrics") or {}).get(metric) if metric else None,
            "metrics": dict(record.get("metrics") or {}),
            "status": _status(record),
            "cached": bool(record.get("cached")),
            "error": record.get("error"),
            "tail": list(record.get("tail") or []),
            "resources": dict(record.get("resources") or {}),
            "duration": record.get("seconds"),
            "round": record.get("round"),
            "rung": record.get("rung"),
            "budget": record.get("budget"),
            "rungs": list(record.get("rungs") or []),
            "task": None,
            "mlflow_run_id": record.get("mlflow_run_id"),
            "mlflow_url": _run_url(self.ui, self.experiment, record.get("mlflow_run_id")),
        }
        if task_id is not None:
            ti = self.tis_by_key.get((task_id, map_index)) or {}
            row["task"] = {
                "task_id": task_id,
                "map_index": map_index,
                "state": ti.get("state"),
                "url": ti_url(self.ui_prefix, self.dag_id, self.run_id, task_id, map_index),
            }
        return row


def _kind(select: Mapping[str, Any] | None, first: Mapping[str, Any]) -> str:
    if select and select.get("kind"):
        return str(select["kind"])
    if first.get("rung") is not None:
        return "rungs"
    return "rounds" if first.get("round") is not None else "single"


def _notices(select: Any, run_finished: bool, mlflow_ui: Mapping[str, str]) -> list[dict[str, str]]:
    notices = []
    if select is None and run_finished:
        notices.append(
            {
                "level": "error",
                "text": "The sweep has no verdict: its select task failed or did not run. "
                "The trials' own records are shown.",
            }
        )
    elif select is None:
        notices.append({"level": "warn", "text": "The sweep is still running: the leaderboard so far."})
    if mlflow_ui.get("error"):
        notices.append({"level": "warn", "text": str(mlflow_ui["error"])})
    return notices


#: The keys of what ``select_best_trial`` returns (``sweeps.select.select_best`` + ``n_cached``).
SELECT_KEYS = ("best", "metric", "mode", "n_trials", "n_succeeded", "n_failed")


def select_rank(select: Mapping[str, Any]) -> tuple[int, int, int]:
    """
    Order the run's XComs that hold a ``leaderboard``: the sweep's own selection first.

    Other tasks may return a dict with a leaderboard too (the example's ``evaluate`` and
    ``summary`` pass on a trimmed copy); the select task's has all of :data:`SELECT_KEYS` and
    records with ``seconds`` and ``resources``, and the longest leaderboard wins a tie.
    """
    board = select.get("leaderboard") or []
    complete = sum(1 for key in SELECT_KEYS if key in select)
    full_records = sum(1 for r in board if isinstance(r, Mapping) and "seconds" in r and "resources" in r)
    return complete, full_records, len(board)


def shape_sweep(
    xcoms: Sequence[Mapping[str, Any]],
    tis: Sequence[Mapping[str, Any]],
    *,
    dag_id: str,
    run_id: str,
    run_state: str | None = None,
    ui_prefix: str = "",
    mlflow_ui: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """
    Return what the sweep view shows, from the run's XCom rows and task instances.

    :param xcoms: ``airflow_ui.xcom_values`` rows of the run.
    :param tis: ``airflow_ui.task_instances`` of the run.
    :param dag_id: The DAG.
    :param run_id: The DAG run.
    :param run_state: The DAG run's state; once ``success`` or ``failed``, nothing is pending.
    :param ui_prefix: The Airflow UI's path prefix ("" at the root).
    :param mlflow_ui: ``{"url": <the MLflow UI's base URL>, "error": ...}`` of the sweep's
        connection; no MLflow links without a URL.
    """
    found = classify(xcoms)
    sweep: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "found": bool(found["plans"] or found["selects"]),
    }
    if not sweep["found"]:
        return sweep
    plans = found["plans"]
    plan_ids = sorted(plans, key=lambda t: (plans[t].get("round") or 0, plans[t].get("rung") or 0, t))
    first = plans[plan_ids[0]] if plan_ids else {}
    select = max(found["selects"], key=select_rank) if found["selects"] else None
    metric = (select or {}).get("metric") or first.get("metric")
    mode = (select or {}).get("mode") or first.get("mode") or "min"
    tracking = first.get("tracking") or {}
    mlflow_ui = mlflow_ui or {}
    finished = run_state in ("success", "failed")
    ctx = _Context(
        found,
        tis,
        metric=metric,
        ui=mlflow_ui.get("url") or "",
        experiment=tracking.get("experiment_id"),
        ui_prefix=ui_prefix,
        dag_id=dag_id,
        run_id=run_id,
    )
    if select is not None:
        board = [dict(r) for r in select["leaderboard"]]
    else:
        board = rank_records(fallback_records(found, ctx.tis_by_key, ctx.trial_tasks, finished), metric, mode)
    rows = [ctx.row(record) for record in board]
    best_id = str(select["best"].get("trial_id")) if select and select.get("best") else None
    if best_id is None:
        best_id = next((r["trial_id"] for r in rows if r["rank"] == 1), None)
    for row in rows:
        row["best"] = row["trial_id"] == best_id
    params: list[str] = []
    for row in rows:
        params.extend(name for name in row["params"] if name not in params)
    counted = {
        "n_trials": len(rows),
        "n_succeeded": sum(1 for r in rows if r["status"] in ("success", "cached")),
        "n_failed": sum(1 for r in rows if r["status"] == "failed"),
        "n_cached": sum(1 for r in rows if r["cached"]),
    }
    counts = {key: (select or {}).get(key, value) for key, value in counted.items()}
    counts["n_pending"] = sum(1 for r in rows if r["status"] in ("running", "pending"))
    sweep.update(
        complete=select is not None,
        kind=_kind(select, first),
        metric=metric,
        mode=mode,
        params=params,
        stage_columns=[c for c in ("round", "rung") if any(r[c] is not None for r in rows)],
        counts=counts,
        best=next((r for r in rows if r["best"]), None),
        rows=rows,
        failed=[r for r in rows if r["status"] == "failed"],
        charts=chart_series(rows, metric, params),
        notices=_notices(select, finished, mlflow_ui),
        select_task=ti_url(ui_prefix, dag_id, run_id, select["task_id"]) if select else None,
        run_url=f"{ui_prefix}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
        tracking=None,
    )
    if tracking:
        sweep["tracking"] = {
            "mlflow_conn_id": tracking.get("mlflow_conn_id"),
            "experiment_id": tracking.get("experiment_id"),
            "experiment_name": tracking.get("experiment_name"),
            "parent_run_id": tracking.get("parent_run_id"),
            "sweep_run_url": _run_url(ctx.ui, tracking.get("experiment_id"), tracking.get("parent_run_id")),
        }
    return sweep


def _ui_prefix() -> str:
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _mlflow_ui(conn_id: str | None) -> dict[str, str]:
    if not conn_id:
        return {}
    try:
        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        return {"url": MlflowHook(mlflow_conn_id=conn_id).ui_url}
    except Exception as err:  # a missing or broken connection: the page says so, without links
        log.warning("mlflow connection %s: %s", conn_id, err)
        return {"url": "", "error": f"No MLflow links: connection {conn_id!r} could not be read: {err}"}


def load_sweep(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """
    Return the sweep of a DAG run (see :func:`shape_sweep`), or None when the run does not exist.

    :param dag_id: The DAG.
    :param run_id: The DAG run.
    """
    from airflow_mlops_provider._compat import airflow_ui

    run = airflow_ui.dag_run_info(dag_id, run_id)
    if run is None:
        return None
    xcoms = airflow_ui.xcom_values(dag_id, run_id)
    tis = airflow_ui.task_instances(dag_id, run_id)
    conn_id = next(
        (
            (row["value"].get("tracking") or {}).get("mlflow_conn_id")
            for row in xcoms
            if row["key"] == PLAN_KEY and isinstance(row["value"], Mapping) and row["value"].get("tracking")
        ),
        None,
    )
    sweep = shape_sweep(
        xcoms,
        tis,
        dag_id=dag_id,
        run_id=run_id,
        run_state=run.get("state"),
        ui_prefix=_ui_prefix(),
        mlflow_ui=_mlflow_ui(conn_id),
    )
    sweep["run"] = run
    return _redacted(sweep, airflow_ui.redact)


def _redacted(sweep: dict[str, Any], redact: Any) -> dict[str, Any]:
    """Mask secrets in the free text a trial wrote (errors, output tails) and in the notices: one pass."""
    texts: list[Any] = []
    for row in sweep.get("rows") or []:
        texts.append(row["error"])
        texts.append(row["tail"])
    texts.extend(n["text"] for n in sweep.get("notices") or [])
    masked = iter(redact(texts))
    for row in sweep.get("rows") or []:
        row["error"], row["tail"] = next(masked), next(masked)
    for notice in sweep.get("notices") or []:
        notice["text"] = next(masked)
    return sweep
