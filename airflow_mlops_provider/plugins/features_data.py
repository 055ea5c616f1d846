"""What the Features page shows: each Feast feature view's last window, freshness and last run.

For every ``feast`` connection, each feature view of its registry:

- its last materialized window (the interval of ``materialization_intervals`` that ends last);
- its freshness: ``now - end of that window`` against a limit, which is the view's tag
  ``mlops.freshness_threshold`` (``"2h"``, ``"30m"``, ``"1d"``, ``"1h30m"`` or seconds), else
  ``[mlops] plugin_freshness_threshold``, else the view's TTL; ``fresh``, ``stale``,
  ``never`` (never materialized) or ``unknown`` (no limit, or a malformed one);
- the rows written by the last materialize task(s): the ``FeastMaterializeOperator`` return
  value ``{view: {"rows", "window", "seconds"}}`` found in XCom (newest first, the tasks of one
  run and task summed: a chunked backfill is one mapped task), matched to the connection by
  the task's rendered ``feast_conn_id``; only DAGs the user may read;
- links to the DAG that materializes it and to those task instances.

A broken repo or registry is that connection's ``error``; every registry read is bounded
(:func:`~airflow_mlops_provider.plugins.gpus_data.call_with_timeout`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_mlops_provider.plugins.gpus_data import call_with_timeout, error_text, task_href

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "FRESHNESS_TAG",
    "connection_report",
    "features_report",
    "freshness",
    "last_materializations",
    "parse_duration",
]

log = logging.getLogger(__name__)

#: A feature view tag holding its freshness threshold, e.g. ``"2h"``.
FRESHNESS_TAG = "mlops.freshness_threshold"
CONFIG_OPTION = "[mlops] plugin_freshness_threshold"
#: How many materialize XComs (newest first) are read to find each view's last run.
XCOM_SCAN_LIMIT = 2000
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")
_HOOKS: dict[str, tuple[str, Any]] = {}
_HOOKS_LOCK = threading.Lock()


def parse_duration(value: Any, *, where: str) -> timedelta:
    """
    Return ``value`` (``"2h"``, ``"30m"``, ``"1d"``, ``"1h30m"``, ``"1w"``, or seconds) as a timedelta.

    :param where: Names the setting in the error.
    :raises ValueError: naming ``where`` and repeating the value.
    """
    text = str(value).strip().lower()
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif text and _DURATION.sub("", text).strip() == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    if not seconds or seconds <= 0:
        raise ValueError(
            f"{where} must be a positive duration such as '2h', '30m', '1d' or seconds, got {value!r}"
        )
    return timedelta(seconds=seconds)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def freshness(end: datetime | None, limit: timedelta | None, now: datetime) -> tuple[str, float | None]:
    """Return ``(status, age in seconds)``: ``never``, ``unknown`` (no limit), ``fresh`` or ``stale``."""
    if end is None:
        return "never", None
    age = (now - end).total_seconds()
    if limit is None:
        return "unknown", age
    return ("stale" if age > limit.total_seconds() else "fresh"), age


def _limit(view: Any, default: timedelta | None) -> tuple[timedelta | None, str | None, str | None]:
    """The view's freshness limit, where it comes from, and the error of a malformed tag."""
    tag = (getattr(view, "tags", None) or {}).get(FRESHNESS_TAG)
    if tag is not None:
        try:
            return (
                parse_duration(tag, where=f"tag {FRESHNESS_TAG} of feature view {view.name!r}"),
                "tag",
                None,
            )
        except ValueError as err:
            return None, None, str(err)
    if default is not None:
        return default, "config", None
    ttl = getattr(view, "ttl", None)
    if ttl and ttl.total_seconds() > 0:
        return ttl, "ttl", None
    return None, None, None


def view_report(view: Any, now: datetime, default: timedelta | None) -> dict[str, Any]:
    """One feature view's row: window, TTL, limit, status, age (the XCom part is added later)."""
    intervals = [
        (start, end)
        for start, end in (
            (_utc(s), _utc(e)) for s, e in (getattr(view, "materialization_intervals", None) or [])
        )
        if start is not None and end is not None
    ]
    last = max(intervals, key=lambda w: w[1]) if intervals else None
    end = last[1] if last else None
    limit, source, error = _limit(view, default)
    status, age = freshness(end, limit, now)
    ttl = getattr(view, "ttl", None)
    return {
        "name": view.name,
        "online": bool(getattr(view, "online", True)),
        "entities": list(getattr(view, "entities", None) or []),
        "features": [f.name for f in getattr(view, "features", None) or []],
        "tags": dict(getattr(view, "tags", None) or {}),
        "ttl_seconds": ttl.total_seconds() if ttl else None,
        "last_window": [last[0].isoformat(), last[1].isoformat()] if last else None,
        "most_recent_end_time": end.isoformat() if end else None,
        "intervals": len(intervals),
        "limit_seconds": limit.total_seconds() if limit else None,
        "limit_source": source,
        "limit_error": error,
        "status": status,
        "age_seconds": age,
        "materialized_by": None,
    }


def _hook(conn_id: str, lock_timeout: float) -> Any:
    """The connection's FeastHook, kept while the connection is unchanged (the store is costly to build)."""
    from airflow_mlops_provider.hooks.feast import FeastHook

    fresh = FeastHook(conn_id, lock_timeout=lock_timeout)
    fingerprint = hashlib.sha256(fresh.connection.get_uri().encode()).hexdigest()
    with _HOOKS_LOCK:
        cached = _HOOKS.get(conn_id)
        if cached and cached[0] == fingerprint:
            return cached[1]
        _HOOKS[conn_id] = (fingerprint, fresh)
    return fresh


def _list_views(hook: Any) -> tuple[str, list[Any]]:
    store = hook.store
    with hook.registry_lock():
        store.refresh_registry()
    return hook.project, sorted(store.list_feature_views(), key=lambda v: v.name)


def connection_report(conn_id: str, now: datetime, default: timedelta | None) -> dict[str, Any]:
    """``{"conn_id", "project", "views", "error"}`` of one ``feast`` connection (never raises)."""
    from airflow_mlops_provider._compat.feast import import_feast
    from airflow_mlops_provider.plugins.gpus_data import backend_timeout

    report: dict[str, Any] = {"conn_id": conn_id, "project": None, "views": [], "error": None}
    try:
        from airflow_mlops_provider.plugins.warmup import ensure_imported

        ensure_imported("feast")  # one import lock with the warm-up thread (see warmup)
        import_feast(typecheck=False)  # seconds on the first page only; not the backend's time
        timeout = backend_timeout()
        hook = _hook(conn_id, lock_timeout=timeout)
        project, views = call_with_timeout(
            lambda: _list_views(hook), f"Feast registry of {conn_id!r}", timeout
        )
    except Exception as err:
        with _HOOKS_LOCK:
            _HOOKS.pop(conn_id, None)
        report["error"] = error_text(err)
        return report
    report["project"] = project
    report["views"] = [view_report(v, now, default) for v in views]
    return report


def _decoded(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) and "rows" in v and "window" in v for v in value.values())
    )


def last_materializations(
    readable: Iterable[str] | None, limit: int = XCOM_SCAN_LIMIT
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """
    Return each feature view's last materialization, keyed by ``(feast_conn_id or None, view)``.

    Reads the newest ``limit`` return-value XComs of materialize tasks (operator name containing
    ``Materialize``) of the ``readable`` DAGs (None: all). A view's last run is the newest
    ``(dag_id, run_id, task_id)`` whose XCom names it; its map indexes are summed.
    """
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from airflow.models.taskinstance import TaskInstance as Ti
    from airflow.models.xcom import XComModel as X
    from sqlalchemy import and_, select

    from airflow_mlops_provider._compat.airflow_ui import db_session

    same = and_(
        Ti.dag_id == X.dag_id, Ti.run_id == X.run_id, Ti.task_id == X.task_id, Ti.map_index == X.map_index
    )
    same_rtif = and_(
        Rtif.dag_id == X.dag_id,
        Rtif.run_id == X.run_id,
        Rtif.task_id == X.task_id,
        Rtif.map_index == X.map_index,
    )
    query = (
        select(X.dag_id, X.run_id, X.task_id, X.map_index, X.value, X.timestamp, Rtif.rendered_fields)
        .join(Ti, same)
        .outerjoin(Rtif, same_rtif)
        .where(X.key == "return_value", Ti.operator.like("%Materialize%"))
    )
    if readable is not None:
        query = query.where(X.dag_id.in_(sorted(readable)))
    with db_session() as session:
        rows = session.execute(query.order_by(X.timestamp.desc()).limit(limit)).all()
    found: dict[tuple[str | None, str], dict[str, Any]] = {}
    for dag_id, run_id, task_id, map_index, raw, at, rendered in rows:
        value = _decoded(raw)
        if not _is_summary(value):
            continue
        fields = _decoded(rendered) if rendered is not None else None
        conn = fields.get("feast_conn_id") if isinstance(fields, dict) else None
        for view, summary in value.items():
            entry = found.setdefault(
                (str(conn) if conn else None, view),
                {
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "task_id": task_id,
                    "at": at.isoformat() if at else None,
                    "dag_href": f"/dags/{quote(dag_id, safe='')}",
                    "run_href": f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
                    "rows": 0,
                    "seconds": 0.0,
                    "window": None,
                    "tasks": [],
                },
            )
            if (entry["dag_id"], entry["run_id"], entry["task_id"]) != (dag_id, run_id, task_id):
                continue
            window = summary.get("window") or [None, None]
            task = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": str(map_index)}
            entry["tasks"].append(
                {
                    "map_index": map_index,
                    "rows": summary.get("rows"),
                    "window": window,
                    "href": task_href(task),
                }
            )
            entry["rows"] += int(summary.get("rows") or 0)
            entry["seconds"] += float(summary.get("seconds") or 0)
            if window[0] and window[1]:
                lo, hi = entry["window"] or window
                entry["window"] = [min(lo, window[0]), max(hi, window[1])]
    for entry in found.values():
        entry["tasks"].sort(key=lambda t: t["map_index"])
    return found


def configured_threshold() -> tuple[timedelta | None, str | None]:
    """``[mlops] plugin_freshness_threshold`` (None when unset) and its error when malformed."""
    from airflow.configuration import conf

    raw = str(conf.get("mlops", "plugin_freshness_threshold", fallback="") or "").strip()
    if not raw:
        return None, None
    try:
        return parse_duration(raw, where=CONFIG_OPTION), None
    except ValueError as err:
        return None, str(err)


def features_report(readable: Iterable[str] | None = None, *, now: datetime | None = None) -> dict[str, Any]:
    """
    Return everything the Features page shows: ``{"connections": [...], "threshold_seconds", ...}``.

    :param readable: DAG ids whose materialize runs may be shown (None: all).
    :param now: The time freshness is measured at (default: now).
    """
    from airflow_mlops_provider._compat.airflow_ui import connection_ids_of_type

    now = now or datetime.now(timezone.utc)
    default, config_error = configured_threshold()
    connections = [connection_report(c, now, default) for c in connection_ids_of_type("feast")]
    xcom_error = None
    runs: dict[tuple[str | None, str], dict[str, Any]] = {}
    if any(c["views"] for c in connections):
        try:
            runs = last_materializations(readable)
        except Exception as err:
            log.exception("reading the materialize XComs failed")
            xcom_error = error_text(err)
    for conn in connections:
        for view in conn["views"]:
            view["materialized_by"] = runs.get((conn["conn_id"], view["name"])) or runs.get(
                (None, view["name"])
            )
    counts = {
        s: sum(v["status"] == s for c in connections for v in c["views"])
        for s in ("fresh", "stale", "never", "unknown")
    }
    return {
        "now": now.isoformat(),
        "threshold_seconds": default.total_seconds() if default else None,
        "config_error": config_error,
        "xcom_error": xcom_error,
        "counts": counts,
        "connections": connections,
    }
