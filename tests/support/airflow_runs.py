"""Read DAG runs back: through a real api-server (REST API v2), or from the tests' metadata database.

- ``trigger_run``, ``wait_run``, ``task_instances``, ``xcom_value``, ``task_log``: with
  :func:`tests.support.airflow_services.airflow_services`, which yields the ``RestApi``;
- ``latest_run_id``, ``task_states``: after an `airflow dags test` run (it has no api-server left
  to ask), from the session's SQLite metadata database.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.airflow_services import RestApi

FINISHED = ("success", "failed")


def trigger_run(api: RestApi, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """Trigger a run of ``dag_id`` with ``conf``; return its run id (the api must accept it)."""
    run_id = f"{dag_id}_{time.time_ns()}"
    body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
    status, answer = api.call("POST", f"/dags/{dag_id}/dagRuns", body)
    assert status == 200, answer
    return run_id


def wait_run(api: RestApi, dag_id: str, run_id: str, timeout: float = 400) -> dict[str, Any]:
    """Wait until the run has finished; return it."""

    def finished() -> tuple[bool, Any]:
        status, body = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return status == 200 and body["state"] in FINISHED, body

    run: dict[str, Any] = api.wait_for(f"run {run_id} to finish", finished, timeout=timeout)
    return run


def task_instances(api: RestApi, dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Return the run's task instances by ``(task_id, map_index)``."""
    status, body = api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
    assert status == 200, body
    return {(ti["task_id"], ti["map_index"]): ti for ti in body["task_instances"]}


def xcom_value(api: RestApi, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    """Return an XCom's value (decoded from JSON when the api gives it as text), or None when it is missing."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
    status, body = api.call("GET", path)
    if status == 404:
        return None
    assert status == 200, body
    value = body["value"]
    return json.loads(value) if isinstance(value, str) else value


def task_log(
    api: RestApi, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> str:
    """Return a task instance try's log as text (its structured lines, JSON-encoded, one per line)."""
    path = (
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        f"?full_content=true&map_index={map_index}"
    )
    status, body = api.call("GET", path)
    assert status == 200, body
    content = body.get("content") if isinstance(body, dict) else body
    if isinstance(content, list):
        return "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in content)
    return str(content)


def _metadata_db() -> Any:
    """A connection to the test session's SQLite metadata database (what `airflow dags test` wrote)."""
    import sqlite3

    from airflow.configuration import conf

    uri = conf.get("database", "sql_alchemy_conn")
    assert uri.startswith("sqlite:///"), f"these helpers read the tests' SQLite database, not {uri!r}"
    return sqlite3.connect(uri.removeprefix("sqlite:///"))


def latest_run_id(dag_id: str) -> str:
    """The run id of the newest DAG run of ``dag_id`` in the metadata database."""
    with contextlib.closing(_metadata_db()) as db:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    assert row is not None, f"no DAG run of {dag_id!r}"
    return str(row[0])


def task_states(dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str | None, int]]:
    """``{(task_id, map_index): (state, try_number)}`` of a DAG run, from the metadata database."""
    with contextlib.closing(_metadata_db()) as db:
        rows = db.execute(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    return {(task_id, map_index): (state, try_number) for task_id, map_index, state, try_number in rows}
