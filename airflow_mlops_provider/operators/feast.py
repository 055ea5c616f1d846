"""Operators for a Feast feature store: apply definitions, materialize by data interval.

The materialization window defaults to the DAG run's data interval, so a rerun or a backfill
of a run repeats exactly the same work. Two helpers build the arguments of mapped tasks:
``per_feature_view`` (one task per feature view, ``.expand()``) and ``backfill_chunks`` (a long
window cut into chunks, ``.expand_kwargs()``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.assets.feast import feature_view_asset
from airflow_mlops_provider.exceptions import FeatureStoreError
from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.operators._common import contains_template

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops_provider.hooks.feast import ViewMaterialization

#: Name of the asset alias through which materialize operators emit feature-view asset events.
DEFAULT_ASSET_ALIAS = "feast-feature-views"
#: The most items ``backfill_chunks`` returns (far above ``[core] max_map_length``, 1024 by default).
MAX_BACKFILL_ITEMS = 100_000
_PROGRESS_EVERY_S = 5.0
#: How long a materialize task waits for another one of this host emitting the same feature
#: view's asset event to end (see ``FeastMaterializeOperator._emit_asset_events``).
_ASSET_EMIT_WAIT_S = 60.0


# --- argument helpers (no Feast import) ------------------------------------------------------


def per_feature_view(feature_views: Sequence[str], *, groups: int | None = None) -> list[list[str]]:
    """
    Return ``feature_views`` as one list per mapped task: one view each, or ``groups`` lists.

    ``FeastMaterializeOperator.partial(...).expand(feature_views=per_feature_view([...]))``

    With ``groups=n`` the views are dealt round-robin into ``n`` lists, so ``n`` tasks (say, one
    per worker slot) share them and each pays the Feast start-up cost once.
    """
    _check_view_names(feature_views, "feature_views")
    if groups is None:
        return [[name] for name in feature_views]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"groups must be a positive integer or None, got {groups!r}")
    dealt: list[list[str]] = [[] for _ in range(min(groups, len(feature_views)))]
    for index, name in enumerate(feature_views):
        dealt[index % len(dealt)].append(name)
    return dealt


def backfill_chunks(
    start: datetime | str,
    end: datetime | str,
    *,
    chunk: timedelta,
    feature_views: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """
    Split ``[start, end]`` into consecutive windows of at most ``chunk``, as mapped-task kwargs.

    Each item has ``start_date``/``end_date`` (ISO 8601) and ``newer_wins=True``, so chunks may
    run in any order, in parallel, and still leave each entity's latest row online. With
    ``feature_views``, one item per (chunk, feature view).

    ``FeastMaterializeOperator.partial(task_id=...).expand_kwargs(backfill_chunks(...))``

    :raises ValueError: for naive or reversed bounds, a non-positive chunk, or more than
        :data:`MAX_BACKFILL_ITEMS` items.
    """
    start_dt = _parse_datetime(start, "start")
    end_dt = _parse_datetime(end, "end")
    if start_dt >= end_dt:
        raise ValueError(f"start must be before end, got start={start!r} and end={end!r}")
    if not isinstance(chunk, timedelta) or chunk <= timedelta(0):
        raise ValueError(f"chunk must be a positive timedelta, got {chunk!r}")
    if feature_views is not None:
        _check_view_names(feature_views, "feature_views")
    whole, rest = divmod(end_dt - start_dt, chunk)
    count = (whole + (1 if rest else 0)) * (1 if feature_views is None else len(feature_views))
    if count > MAX_BACKFILL_ITEMS:
        raise ValueError(
            f"chunk={chunk!r} cuts [{start_dt.isoformat()}, {end_dt.isoformat()}] into {count} items, "
            f"more than {MAX_BACKFILL_ITEMS}; give a longer chunk"
        )
    windows = []
    cursor = start_dt
    while cursor < end_dt:
        upper = end_dt if end_dt - cursor <= chunk else cursor + chunk  # cursor + chunk may pass datetime.max
        windows.append((cursor, upper))
        cursor = upper
    items = []
    for lower, upper in windows:
        base = {"start_date": lower.isoformat(), "end_date": upper.isoformat(), "newer_wins": True}
        if feature_views is None:
            items.append(base)
        else:
            items += [{**base, "feature_views": [name]} for name in feature_views]
    return items


def _check_view_names(feature_views: Any, arg: str) -> None:
    if isinstance(feature_views, str) or not isinstance(feature_views, Sequence) or not feature_views:
        raise ValueError(f"{arg} must be a non-empty list of feature view names, got {feature_views!r}")
    bad = [v for v in feature_views if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{arg} must hold non-empty strings, got {feature_views!r}")


def _parse_datetime(value: Any, arg: str) -> datetime:
    """Parse a datetime or ISO 8601 string; it must be timezone-aware (ValueError otherwise)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{arg} must be an ISO 8601 datetime, got {value!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError(f"{arg} must be a timezone-aware datetime, got {value!r}")
    if parsed.tzinfo is None or parsed.tzinfo.utcoffset(parsed) is None:
        raise ValueError(f"{arg} must be timezone-aware (e.g. end with +00:00), got {value!r}")
    try:
        utc = parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before datetime.min in UTC
        raise ValueError(f"{arg} must fall between years 1 and 9999 in UTC, got {value!r}") from None
    # A plain datetime (not pendulum's subclass), so arithmetic and comparisons stay predictable.
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=timezone.utc
    )


def resolve_window(
    start: Any, end: Any, context: Context | dict[str, Any], *, now: datetime | None = None
) -> tuple[datetime | None, datetime]:
    """
    Return the materialization window: the arguments, else the run's data interval.

    ``start`` of None with ``context`` None-interval stays None (incremental).

    :raises AirflowFailException: naive datetimes, start >= end, an end in the future, or no
        window at all.
    """
    now = now or datetime.now(timezone.utc)
    if end is None:
        end = context.get("data_interval_end")
    if end is None:
        raise AirflowFailException(
            "end_date is not set and the DAG run has no data interval: pass end_date explicitly"
        )
    try:
        end_dt = _parse_datetime(end, "end_date")
        start_dt = None if start is None else _parse_datetime(start, "start_date")
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    if end_dt > now:
        raise AirflowFailException(
            f"end_date {end_dt.isoformat()} is in the future (now {now.isoformat()}): Feast would "
            "record it as materialized and later incremental runs would skip the rows in between"
        )
    if start_dt is not None and start_dt >= end_dt:
        raise AirflowFailException(
            f"start_date must be before end_date, got start_date={start_dt.isoformat()} "
            f"and end_date={end_dt.isoformat()}"
        )
    return start_dt, end_dt


# --- operators -----------------------------------------------------------------------------


class FeastApplyOperator(BaseOperator):
    """
    Apply a feature repo's definitions (``feast apply``), logging the plan first.

    :param feast_conn_id: Connection of type ``feast`` (templated).
    :param allow_deletes: Apply even when the plan deletes objects from the registry.
    """

    template_fields: Sequence[str] = ("feast_conn_id",)
    ui_color = "#e8f0fe"

    def __init__(
        self, *, feast_conn_id: str = FeastHook.default_conn_name, allow_deletes: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(allow_deletes, bool):
            raise ValueError(f"allow_deletes must be True or False, got {allow_deletes!r}")
        self.feast_conn_id = feast_conn_id
        self.allow_deletes = allow_deletes

    def execute(self, context: Context) -> dict[str, list[str]]:
        # The definitions are the user's own code: keep Feast's run-time type checks on them.
        hook = FeastHook(self.feast_conn_id, typecheck=True)
        try:
            plan = hook.apply(
                allow_deletes=self.allow_deletes,
                log=lambda text: self.log.info("Feast plan for project %s:\n%s", hook.project, text),
            )
        except FeatureStoreError as err:
            raise AirflowFailException(str(err)) from err
        summary = {
            "added": [f"{kind} {name}" for kind, name in plan.added],
            "changed": [f"{kind} {name}" for kind, name in plan.changed],
            "deleted": [f"{kind} {name}" for kind, name in plan.deleted],
        }
        self.log.info(
            "Applied: %d added, %d changed, %d deleted",
            len(plan.added),
            len(plan.changed),
            len(plan.deleted),
        )
        return summary


class FeastMaterializeOperator(BaseOperator):
    """
    Materialize feature views into the online store over a window (default: the data interval).

    Returns ``{feature_view: {"rows": int, "window": [start, end], "seconds": float}}`` and emits
    one asset event (``feast://<project>/<feature_view>``) per materialized feature view.

    :param feature_views: Names to materialize; None means every online feature view (templated).
    :param start_date: Window start, tz-aware datetime or ISO string; default the data interval
        start (templated). Not the task's scheduling start date.
    :param end_date: Window end (inclusive); default the data interval end; must not be in the
        future (templated).
    :param feast_conn_id: Connection of type ``feast`` (templated).
    :param online_write_batch_size: Rows per online-store write; bounds memory on big windows.
    :param newer_wins: Never replace an entity's online row with an older one, so windows may be
        materialized in any order or in parallel (costs one online read per batch).
    :param asset_alias: Name of the ``AssetAlias`` outlet through which the asset events go.
    """

    template_fields: Sequence[str] = ("feature_views", "window_start", "window_end", "feast_conn_id")
    ui_color = "#e8f0fe"
    _incremental = False

    def __init__(
        self,
        *,
        feature_views: list[str] | str | None = None,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        online_write_batch_size: int | None = 10_000,
        newer_wins: bool = False,
        asset_alias: str | None = DEFAULT_ASSET_ALIAS,
        **kwargs: Any,
    ) -> None:
        # default_args fill every argument named in the signature, so a DAG-wide
        # default_args["start_date"] would land here: hand it back to the task.
        defaults = kwargs.get("default_args") or {}
        if start_date is not None and start_date is defaults.get("start_date"):
            kwargs["start_date"], start_date = start_date, None
        if end_date is not None and end_date is defaults.get("end_date"):
            kwargs["end_date"], end_date = end_date, None
        super().__init__(**kwargs)
        if feature_views is not None and not contains_template(feature_views):
            _check_view_names(feature_views, "feature_views")
        for arg, value in (("start_date", start_date), ("end_date", end_date)):
            if value is not None and not contains_template(value) and not hasattr(value, "resolve"):
                _parse_datetime(value, arg)
        if online_write_batch_size is not None and (
            isinstance(online_write_batch_size, bool)
            or not isinstance(online_write_batch_size, int)
            or online_write_batch_size <= 0
        ):
            raise ValueError(
                f"online_write_batch_size must be a positive integer or None, got {online_write_batch_size!r}"
            )
        if not isinstance(newer_wins, bool):
            raise ValueError(f"newer_wins must be True or False, got {newer_wins!r}")
        self.feature_views = feature_views
        self.window_start = start_date
        self.window_end = end_date
        self.feast_conn_id = feast_conn_id
        self.online_write_batch_size = online_write_batch_size
        self.newer_wins = newer_wins
        self.asset_alias = asset_alias
        if asset_alias is not None and not isinstance(asset_alias, str):
            raise ValueError(f"asset_alias must be an asset alias name or None, got {asset_alias!r}")
        if asset_alias:
            try:
                alias = AssetAlias(name=asset_alias)
            except ValueError as err:  # Airflow's own rules for a name (length, whitespace...)
                raise ValueError(
                    f"asset_alias is not a valid asset alias name ({err}), got {asset_alias!r}"
                ) from err
            self.outlets = [*self.outlets, alias]

    def _rendered_views(self) -> list[str] | None:
        views = self.feature_views
        if views is None:
            return None
        if isinstance(views, str):
            views = [v.strip() for v in views.split(",") if v.strip()]
        try:
            _check_view_names(views, "feature_views")
        except ValueError as err:
            raise AirflowFailException(str(err)) from err
        return list(views)

    def _window(self, context: Context) -> tuple[datetime | None, datetime]:
        start = None if self._incremental else self.window_start
        if not self._incremental and start is None:
            start = context.get("data_interval_start")
            if start is None:
                raise AirflowFailException(
                    "start_date is not set and the DAG run has no data interval: pass start_date explicitly"
                )
        return resolve_window(start, self.window_end, context)

    def execute(self, context: Context) -> dict[str, dict[str, Any]]:
        views = self._rendered_views()
        start, end = self._window(context)
        hook = FeastHook(self.feast_conn_id)
        try:
            hook.get_feature_views(views)
        except FeatureStoreError as err:
            raise AirflowFailException(str(err)) from err
        self.log.info(
            "Materializing %s of Feast project %s over [%s, %s]",
            ", ".join(views) if views else "all online feature views",
            hook.project,
            start.isoformat() if start else "last materialized end",
            end.isoformat(),
        )
        last_log = {"at": time.monotonic()}

        def progress(view: str, rows: int, seconds: float) -> None:
            if time.monotonic() - last_log["at"] >= _PROGRESS_EVERY_S:
                last_log["at"] = time.monotonic()
                self.log.info(
                    "%s: %d rows written in %.1f s (%.0f rows/s)",
                    view,
                    rows,
                    seconds,
                    rows / max(seconds, 1e-9),
                )

        results = hook.materialize(
            views,
            start,
            end,
            online_write_batch_size=self.online_write_batch_size,
            newer_wins=self.newer_wins,
            progress=progress,
        )
        for result in results:
            self.log.info(
                "%s: %d rows over [%s, %s] in %.2f s (%.0f rows/s)",
                result.feature_view,
                result.rows,
                result.start.isoformat(),
                result.end.isoformat(),
                result.seconds,
                result.rows / max(result.seconds, 1e-9),
            )
        self._emit_asset_events(context, hook, results)
        return {r.feature_view: r.summary() for r in results}

    def _emit_asset_events(
        self, context: Context, hook: FeastHook, results: list[ViewMaterialization]
    ) -> None:
        """
        Add one event per feature view to the alias, one emitter of a view at a time per host.

        Airflow (3.0 to 3.3.2 at least) creates the asset of an alias event it has not seen yet
        while it records the task's success, and nothing stops two tasks from creating it at
        once: the second one's insert breaks the asset's unique index and Airflow marks that task
        failed (not up for retry), its materialization done. So the first events of a feature
        view from two runs of one window, or from the chunks of a first backfill, failed all but
        one task. Before adding a view's event, a task takes ``asset-<view>.lock`` in the repo's
        lock directory and keeps it until its process exits, which is after the task runner's
        success report came back (so the asset exists); the next task emitting that view waits
        for it. Locks are taken in name order, so two tasks never wait for each other. Workers
        on several hosts (SQL registry) are not covered.
        """
        if not self.asset_alias:
            return
        events = context["outlet_events"][AssetAlias(name=self.asset_alias)]
        for result in sorted(results, key=lambda r: r.feature_view):
            view = result.feature_view
            if not hook.hold_until_exit(f"asset-{view}.lock", _ASSET_EMIT_WAIT_S) and hook.lock_dir:
                self.log.warning(
                    "Another task of this host still reports an asset event of %s after %g s; "
                    "emitting this one anyway",
                    view,
                    _ASSET_EMIT_WAIT_S,
                )
            events.add(feature_view_asset(hook.project, view), extra=result.summary())


class FeastMaterializeIncrementalOperator(FeastMaterializeOperator):
    """
    Materialize each feature view from its last materialized end up to ``end_date``.

    :param feature_views: Names to materialize; None means every online feature view (templated).
    :param end_date: Window end; default the data interval end; must not be in the future
        (templated).
    :param feast_conn_id: Connection of type ``feast`` (templated).
    :param online_write_batch_size: Rows per online-store write; bounds memory on big windows.
    :param asset_alias: Name of the ``AssetAlias`` outlet through which the asset events go.
    """

    _incremental = True

    def __init__(
        self,
        *,
        feature_views: list[str] | str | None = None,
        end_date: datetime | str | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        online_write_batch_size: int | None = 10_000,
        asset_alias: str | None = DEFAULT_ASSET_ALIAS,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_views=feature_views,
            end_date=end_date,
            feast_conn_id=feast_conn_id,
            online_write_batch_size=online_write_batch_size,
            asset_alias=asset_alias,
            **kwargs,
        )
