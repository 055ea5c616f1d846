"""The materialize path of :class:`~airflow_mlops_provider.hooks.feast.FeastHook`.

Does what ``FeatureStore.materialize`` does for the local provider: read each feature view's
window from the offline store, write it to the online store in batches, record the interval
in the registry. Differences, all for running many tasks against one repo at once:

- the registry lock is held for the registry write only, so feature views fan out in parallel;
- the rows written are counted (and reported as they are written);
- with ``newer_wins``, a batch drops the rows older than what the online store already holds
  for their entity, under a per-view lock, so windows may be written in any order;
- a SQLite online store gets its batches through :mod:`._feast_sqlite` (prepared outside the
  database lock, queued on ``<online db>.write.lock``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import feast as feast_compat
from airflow_mlops_provider.exceptions import FeatureStoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from feast import FeatureView

    from airflow_mlops_provider.hooks.feast import FeastHook

__all__ = ["ViewMaterialization", "incremental_start", "materialize"]

log = logging.getLogger(__name__)
_BATCH_SIZE_WARNED: set[str] = set()


@dataclass(frozen=True)
class ViewMaterialization:
    """The outcome of materializing one feature view over one window."""

    feature_view: str
    rows: int
    start: datetime
    end: datetime
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary: rows, window (ISO 8601) and seconds."""
        return {
            "rows": self.rows,
            "window": [self.start.isoformat(), self.end.isoformat()],
            "seconds": round(self.seconds, 3),
        }


def materialize(
    hook: FeastHook,
    feature_views: list[str] | None,
    start: datetime | None,
    end: datetime,
    *,
    online_write_batch_size: int | None = None,
    newer_wins: bool = False,
    progress: Callable[[str, int, float], None] | None = None,
) -> list[ViewMaterialization]:
    """
    Materialize feature views one after another over ``[start, end]`` (``FeastHook.materialize``).

    Does what ``FeatureStore.materialize`` does for the local provider (offline read, online
    write, interval recorded in the registry), with the registry lock around the registry write
    only, and counting the rows written.

    :param hook: The hook of the repo (``self`` when called as ``hook.materialize(...)``).
    :param feature_views: Names; None means every online feature view.
    :param start: Window start; None means incremental (from the view's last materialized end).
    :param end: Window end (inclusive, as in Feast).
    :param online_write_batch_size: Rows per online-store write batch (bounds memory).
    :param newer_wins: Skip rows older than what the online store already holds for an
        entity (so windows materialized in any order, or in parallel, give the same store).
    :param progress: Called after each written batch with (feature view, rows so far, seconds).
    """
    store = hook.store
    views = hook.get_feature_views(feature_views)
    if online_write_batch_size is not None:
        _set_online_write_batch_size(store.config, online_write_batch_size)
    provider = feast_compat.store_provider(store)
    results = []
    for view in views:
        view_start = start if start is not None else incremental_start(view)
        results.append(
            _materialize_view(
                hook, provider, view, view_start, end, newer_wins=newer_wins, on_progress=progress
            )
        )
    return results


def incremental_start(view: FeatureView) -> datetime:
    """Where an incremental run of ``view`` starts: its last materialized end, else now - ttl."""
    start = view.most_recent_end_time
    if start is not None:
        return start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    if view.ttl and view.ttl.total_seconds() > 0:
        return now - view.ttl
    return datetime(1970, 1, 1, tzinfo=timezone.utc)


def _set_online_write_batch_size(config: Any, rows: int) -> None:
    # materialization_config.online_write_batch_size is public config from feast 0.63.0 on.
    materialization = getattr(config, "materialization_config", None)
    if materialization is not None and hasattr(materialization, "online_write_batch_size"):
        materialization.online_write_batch_size = rows
        return
    found = _compat.installed_version("feast") or "(not installed)"
    if found not in _BATCH_SIZE_WARNED:
        _BATCH_SIZE_WARNED.add(found)
        log.warning(
            "online_write_batch_size=%d is ignored: feast %s has no "
            "materialization_config.online_write_batch_size (feast >= 0.63.0); "
            "each feature view is written in one batch",
            rows,
            found,
        )


def _materialize_view(
    hook: FeastHook,
    provider: Any,
    view: FeatureView,
    start: datetime,
    end: datetime,
    *,
    newer_wins: bool,
    on_progress: Callable[[str, int, float], None] | None,
) -> ViewMaterialization:
    store = hook.store
    online_store = provider.online_store
    started = time.monotonic()
    counter = {"rows": 0}
    original_write = online_store.online_write_batch
    guard_lock = threading.Lock()

    def counting_write(config: Any, table: Any, data: Any, progress: Any = None) -> None:
        with guard_lock:
            if newer_wins and data:
                with hook.file_lock(f"online-{table.name}.lock", f"online write lock of {table.name!r}"):
                    data = _drop_older_rows(online_store, config, table, data)
                    _write_batch(hook, original_write, online_store, config, table, data, progress)
            else:
                _write_batch(hook, original_write, online_store, config, table, data, progress)
            counter["rows"] += len(data)
            if on_progress:
                on_progress(table.name, counter["rows"], time.monotonic() - started)

    online_store.online_write_batch = counting_write
    try:
        provider.materialize_single_feature_view(
            config=store.config,
            feature_view=view,
            start_date=start,
            end_date=end,
            registry=store.registry,
            project=store.project,
            tqdm_builder=_quiet_tqdm,
        )
    except Exception as err:
        raise FeatureStoreError(
            f"Materializing feature view {view.name!r} over [{start.isoformat()}, {end.isoformat()}] "
            f"failed: {err}",
            feature_view=view.name,
        ) from err
    finally:
        del online_store.online_write_batch
    with hook.registry_lock():
        store.registry.refresh(store.project)
        store.registry.apply_materialization(view, store.project, start, end, commit=True)
    return ViewMaterialization(
        feature_view=view.name,
        rows=counter["rows"],
        start=start,
        end=end,
        seconds=time.monotonic() - started,
    )


def _write_batch(
    hook: FeastHook, write: Any, online_store: Any, config: Any, table: Any, data: Any, progress: Any
) -> None:
    """
    Write one batch with the online store's own ``online_write_batch`` (``write``).

    SQLite admits one writer at a time: for a SQLite online store the rows are prepared
    outside the database lock and written with ``executemany`` under a file lock that
    parallel tasks queue on (see ``_feast_sqlite``). Other stores take concurrent writers.
    """
    if type(online_store).__name__ != "SqliteOnlineStore":
        write(config, table, data, progress)
        return
    from airflow_mlops_provider.hooks import _feast_sqlite

    _feast_sqlite.write_batch(
        write,
        online_store,
        config,
        table,
        data,
        progress,
        lock=lambda db: hook.lock_at(db.with_name(db.name + ".write.lock"), "SQLite online store lock"),
    )


def _quiet_tqdm(length: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=length, disable=True)


def _drop_older_rows(online_store: Any, config: Any, table: Any, data: list[Any]) -> list[Any]:
    """Keep the rows whose event time is at least the one stored for their entity."""
    stored = online_store.online_read(config, table, [row[0] for row in data], None)
    kept = []
    for row, (stored_ts, _) in zip(data, stored):
        new_ts = row[2]
        if stored_ts is not None and _as_utc(stored_ts) > _as_utc(new_ts):
            continue
        kept.append(row)
    return kept


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
