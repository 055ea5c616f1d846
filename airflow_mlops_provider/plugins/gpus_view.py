"""The GPUs page (nav): Docker hosts' devices, who leases them, who waits; Kubernetes GPU inventory.

``GET /mlops/gpus`` (HTML) and ``GET /mlops/api/gpus`` (JSON) render the same report
(:func:`~airflow_mlops_provider.plugins.gpus_data.gpus_report`). A Docker engine or cluster that
does not answer is a notice on the page, not an error; task instances of DAGs the user may not
read are shown as hidden.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from airflow_mlops_provider.plugins.auth import CurrentUser, can_read_dag
from airflow_mlops_provider.plugins.gpus_data import gpus_report
from airflow_mlops_provider.plugins.render import page

__all__ = ["router"]

router = APIRouter()


async def _report(user: Any) -> dict[str, Any]:
    # Asked per DAG id, as the REST API does: a lease may name a DAG the database no longer has.
    may_read = functools.cache(lambda dag_id: can_read_dag(user, dag_id, "TASK_INSTANCE"))
    return await run_in_threadpool(gpus_report, may_read)


@router.get("/gpus", response_class=HTMLResponse)
async def gpus_page(user: CurrentUser) -> HTMLResponse:
    """The GPUs page."""
    report = await _report(user)
    return page("gpus.html", title="GPUs", active="/mlops/gpus", report=report)


@router.get("/api/gpus")
async def gpus_json(user: CurrentUser) -> dict[str, Any]:
    """The GPUs page's data as JSON."""
    return await _report(user)
