"""The Sweep tab of a DAG run page: the leaderboard, the charts, the best trial and the failures.

``GET /mlops/sweeps/{dag_id}/{run_id}`` (HTML, in the Airflow UI's frame) and
``GET /mlops/api/sweeps/{dag_id}/{run_id}`` (JSON) show the same data, read by
:func:`~airflow_mlops_provider.plugins.sweep_data.load_sweep` from what the sweep stored. Both
need a user whom the auth manager lets read the DAG's XCom.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from airflow_mlops_provider.plugins.auth import CurrentUser, require_dag
from airflow_mlops_provider.plugins.charts import scatter_svg
from airflow_mlops_provider.plugins.render import fmt_number, fmt_seconds, page
from airflow_mlops_provider.plugins.sweep_data import load_sweep

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()


def _sweep(user: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    require_dag(user, dag_id)
    try:
        sweep = load_sweep(dag_id, run_id)
    except Exception as err:  # the metadata database: a readable page, not a 500
        log.exception("sweep of %s / %s could not be read", dag_id, run_id)
        from airflow_mlops_provider.plugins.render import redact

        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "found": False,
            "error": str(redact(f"metadata database: {type(err).__name__}: {err}")),
        }
    if sweep is None:
        raise HTTPException(status_code=404, detail=f"DAG {dag_id!r} has no run {run_id!r}")
    return sweep


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "None" if value is None else fmt_number(value)


def _shown(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard's cells as text, made here: 500 rows render in a fraction of a second."""
    params, metric = sweep.get("params") or [], sweep.get("metric")
    rows = []
    for row in sweep.get("rows") or []:
        shown = {
            "params": [_text(row["params"][name]) if name in row["params"] else "" for name in params],
            "resources": ", ".join(f"{key}={_text(value)}" for key, value in row["resources"].items()),
            "metric": fmt_number(row["metric"], 6),
            "duration": fmt_seconds(row["duration"]),
            "rungs": " · ".join(
                f"{(r.get('rung') or 0) + 1}: {fmt_number(r.get(metric)) if metric else ''}"
                for r in row["rungs"]
            ),
        }
        rows.append({**row, "shown": shown})
    return rows


@router.get("/api/sweeps/{dag_id}/{run_id}")
def sweep_json(dag_id: str, run_id: str, user: CurrentUser) -> dict[str, Any]:
    """The sweep of a DAG run, as JSON."""
    return _sweep(user, dag_id, run_id)


@router.get("/sweeps/{dag_id}/{run_id}", response_class=HTMLResponse)
def sweep_page(dag_id: str, run_id: str, user: CurrentUser) -> HTMLResponse:
    """The sweep of a DAG run, as a page."""
    sweep = _sweep(user, dag_id, run_id)
    charts = [
        {**chart, "svg": scatter_svg(chart["points"], x_label=chart["param"], y_label=str(chart["metric"]))}
        for chart in sweep.get("charts") or []
    ]
    return page(
        "sweep.html", title=f"Sweep of {dag_id}", active="", sweep=sweep, charts=charts, rows=_shown(sweep)
    )
