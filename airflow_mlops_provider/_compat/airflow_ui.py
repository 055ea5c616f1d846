"""The api-server internals the ``mlops`` plugin's pages use, in one place and behind one gate.

Airflow does not protect a plugin's FastAPI app, and it offers plugins no public API for the
signed-in user or for reading the metadata database from inside the api-server. The plugin uses
exactly what Airflow's own REST API uses, so a page is guarded by the same token or session
cookie as the UI and answers what the auth manager answers:

- ``airflow.api_fastapi.core_api.security.get_user``: the FastAPI dependency behind every REST
  route; it reads the ``Authorization: Bearer`` header or the UI's ``_token`` cookie and asks the
  auth manager for the user (401 without a token, 403 for an invalid one).
- ``airflow.api_fastapi.app.get_auth_manager`` and ``BaseAuthManager.is_authorized_dag`` /
  ``get_authorized_dag_ids`` / ``is_authorized_view``.
- ``airflow.models.xcom.XComModel``, ``TaskInstance``, ``DagRun``, ``Connection`` and
  ``airflow.utils.session.create_session``: the ORM the REST routes read.

Read in Airflow 3.2.2 (the declared floor) and 3.3.2 (locked). ``GATE`` covers
``3.2.2 <= v < 3.5.0``; outside it the plugin's pages refuse to serve (they cannot check access
any other way) and say why.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider._compat import VersionRange, version_gate

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "GATE",
    "can_read_dag",
    "connection_ids_of_type",
    "current_user",
    "dag_run_info",
    "db_session",
    "readable_dag_ids",
    "redact",
    "task_instances",
    "xcom_values",
]

GATE = VersionRange(
    "apache-airflow-core",
    "3.2.2",
    "3.5.0",
    "airflow.api_fastapi.core_api.security.get_user, airflow.api_fastapi.app.get_auth_manager "
    "and the XCom/TaskInstance/DagRun ORM models",
)


def _airflow_get_user() -> Any:
    version_gate(GATE, strict=True)
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def current_user() -> Any:
    """Return Airflow's own ``get_user`` dependency (bearer token or the UI's session cookie)."""
    return _airflow_get_user()


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def can_read_dag(user: Any, dag_id: str, entity: str | None = None) -> bool:
    """
    Return whether the auth manager lets ``user`` read ``dag_id`` (or one of its entities).

    :param user: The user ``current_user`` resolved.
    :param dag_id: The DAG.
    :param entity: A ``DagAccessEntity`` name (``"XCOM"``, ``"RUN"``, ``"TASK_INSTANCE"``), or
        None for the DAG itself.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    access_entity = DagAccessEntity[entity] if entity else None
    # As Airflow's own ``requires_access_dag`` does: the DAG's team decides in multi-team mode.
    team_name = DagModel.get_team_name(dag_id)
    return bool(
        _auth_manager().is_authorized_dag(
            method="GET",
            access_entity=access_entity,
            details=DagDetails(id=dag_id, team_name=team_name),
            user=user,
        )
    )


def readable_dag_ids(user: Any) -> set[str]:
    """Return the ids of the DAGs the auth manager lets ``user`` read."""
    return set(_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


@contextlib.contextmanager
def db_session() -> Iterator[Any]:
    """A metadata-database session (read only by the plugin), closed on exit."""
    from airflow.utils.session import create_session

    with create_session() as session:
        yield session


def _value(row: Any) -> Any:
    from airflow.models.xcom import XComModel

    value = row.value
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return XComModel.deserialize_value(row)


def xcom_values(
    dag_id: str,
    run_id: str,
    *,
    key: str | None = None,
    task_ids: Sequence[str] | None = None,
    map_index: int | None = None,
) -> list[dict[str, Any]]:
    """
    Return the run's XCom entries as ``{"task_id", "map_index", "key", "value"}`` (value decoded).

    :param dag_id: The DAG.
    :param run_id: The DAG run.
    :param key: Only this key.
    :param task_ids: Only these tasks.
    :param map_index: Only this map index (-1: unmapped tasks).
    """
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
    if key is not None:
        query = query.where(XComModel.key == key)
    if task_ids is not None:
        query = query.where(XComModel.task_id.in_(list(task_ids)))
    if map_index is not None:
        query = query.where(XComModel.map_index == map_index)
    with db_session() as session:
        rows = session.scalars(query.order_by(XComModel.task_id, XComModel.map_index)).all()
        return [
            {"task_id": r.task_id, "map_index": r.map_index, "key": r.key, "value": _value(r)} for r in rows
        ]


def task_instances(dag_id: str, run_id: str, task_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Return the run's task instances: task_id, map_index, state, try_number, operator, times."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    if task_ids is not None:
        query = query.where(TaskInstance.task_id.in_(list(task_ids)))
    with db_session() as session:
        rows = session.scalars(query.order_by(TaskInstance.task_id, TaskInstance.map_index)).all()
        return [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state) if ti.state is not None else None,
                "try_number": ti.try_number,
                "operator": ti.operator,
                "start_date": ti.start_date,
                "end_date": ti.end_date,
                "duration": ti.duration,
            }
            for ti in rows
        ]


def dag_run_info(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """Return the DAG run's state, dates and run type, or None when it does not exist."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    with db_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
        if run is None:
            return None
        return {
            "dag_id": run.dag_id,
            "run_id": run.run_id,
            "state": str(run.state) if run.state is not None else None,
            "logical_date": run.logical_date,
            "start_date": run.start_date,
            "end_date": run.end_date,
            "run_type": str(run.run_type),
        }


def connection_ids_of_type(conn_type: str) -> list[str]:
    """
    Return the ids of the connections of ``conn_type``: the metadata database's and ``AIRFLOW_CONN_*``.

    Connections held only by another secrets backend cannot be listed; name them in the plugin's
    configuration instead.
    """
    from airflow.models.connection import Connection
    from sqlalchemy import select

    found: set[str] = set()
    with contextlib.suppress(Exception), db_session() as session:
        found.update(
            session.scalars(select(Connection.conn_id).where(Connection.conn_type == conn_type)).all()
        )
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_") or not value:
            continue
        kind = None
        text = value.strip()
        if text.startswith("{"):
            with contextlib.suppress(ValueError, AttributeError):
                kind = json.loads(text).get("conn_type")
        else:
            kind = text.split("://", 1)[0] if "://" in text else None
        if kind and kind.replace("-", "_") == conn_type:
            found.add(name[len("AIRFLOW_CONN_") :].lower())
    return sorted(found)


def redact(value: Any, name: str | None = None) -> Any:
    """
    Return ``value`` with what the api-server's secrets masker hides replaced by ``***``.

    ``airflow._shared.secrets_masker.redact`` is what the REST API's connection, variable and
    asset models call: it masks every registered secret, and every value under a sensitive key
    name (``password``, ``token``, ``secret``, ...). Then the Task SDK's masker (Airflow 3.2.2
    and 3.3.2 both ship ``airflow.sdk._shared.secrets_masker``), which holds what our hooks mask.

    :param value: A string, or JSON-like structure.
    :param name: The key the value is stored under, if any.
    """
    from airflow._shared.secrets_masker import redact as airflow_redact

    value = airflow_redact(value, name)
    # The hooks register what they read at runtime (a connection's password or token) with the
    # Task SDK's masker (``airflow.sdk.log.mask_secret``), a separate instance of the same class
    # in ``airflow.sdk._shared.secrets_masker``; apply it too.
    try:
        from airflow.sdk._shared.secrets_masker import redact as sdk_redact
    except ImportError:  # pragma: no cover - a Task SDK without the shared masker
        return value
    return sdk_redact(value, name)
