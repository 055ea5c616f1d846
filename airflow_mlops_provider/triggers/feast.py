"""Trigger that waits until a Feast feature view has been materialized recently enough."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops_provider.triggers._retry import call_in_thread_with_retries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def freshness(
    end: datetime | None, max_staleness: timedelta, as_of: datetime | None = None
) -> tuple[bool, str]:
    """Return (fresh, message) for a feature view whose last materialized end is ``end``."""
    reference = as_of or datetime.now(timezone.utc)
    if end is None:
        return False, "has never been materialized"
    staleness = reference - end
    verdict = "within" if staleness <= max_staleness else "beyond"
    return (
        staleness <= max_staleness,
        f"was materialized up to {end.isoformat()}, {staleness} before {reference.isoformat()} "
        f"({verdict} max_staleness {max_staleness})",
    )


class FeastFeatureFreshnessTrigger(BaseTrigger):
    """
    Poll the Feast registry until ``feature_view`` is fresh, then yield one event.

    A check that fails with a transient error (``FeastHook.is_transient_error``: the registry
    lock held past ``lock_timeout``, a dropped connection) is retried with back-off; any other
    error ends the wait at once with a ``status: error`` event.

    :param feast_conn_id: Connection of type ``feast``.
    :param feature_view: The feature view to watch.
    :param max_staleness_seconds: Largest accepted age of the last materialized end.
    :param poke_interval: Seconds between checks.
    :param as_of: ISO 8601 reference time (default: now at each check).
    :param lock_timeout: Seconds one check waits for the registry lock before it is retried.
    """

    def __init__(
        self,
        *,
        feast_conn_id: str,
        feature_view: str,
        max_staleness_seconds: float,
        poke_interval: float = 60.0,
        as_of: str | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.feast_conn_id = feast_conn_id
        self.feature_view = feature_view
        self.max_staleness_seconds = float(max_staleness_seconds)
        self.poke_interval = float(poke_interval)
        self.as_of = as_of
        self.lock_timeout = float(lock_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_mlops_provider.triggers.feast.FeastFeatureFreshnessTrigger",
            {
                "feast_conn_id": self.feast_conn_id,
                "feature_view": self.feature_view,
                "max_staleness_seconds": self.max_staleness_seconds,
                "poke_interval": self.poke_interval,
                "as_of": self.as_of,
                "lock_timeout": self.lock_timeout,
            },
        )

    def _check(self, hook: Any) -> tuple[bool, str, datetime | None]:
        end = hook.most_recent_end_time(self.feature_view)
        as_of = datetime.fromisoformat(self.as_of) if self.as_of else None
        fresh, message = freshness(end, timedelta(seconds=self.max_staleness_seconds), as_of)
        return fresh, message, end

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_mlops_provider.hooks.feast import FeastHook

        hook = FeastHook(self.feast_conn_id, lock_timeout=self.lock_timeout)
        while True:
            try:
                fresh, message, end = await call_in_thread_with_retries(
                    self._check,
                    hook,
                    is_transient=FeastHook.is_transient_error,
                    log=self.log,
                    what=f"Feast freshness check of feature view {self.feature_view!r}",
                )
            except Exception as err:
                yield TriggerEvent(
                    {
                        "status": "error",
                        "message": f"Feature view {self.feature_view!r}: {type(err).__name__}: {err}",
                    }
                )
                return
            if fresh:
                yield TriggerEvent(
                    {
                        "status": "success",
                        "message": f"Feature view {self.feature_view!r} {message}",
                        "most_recent_end_time": end.isoformat() if end else None,
                    }
                )
                return
            self.log.info(
                "Feature view %s %s; checking again in %.0f s", self.feature_view, message, self.poke_interval
            )
            await asyncio.sleep(self.poke_interval)
