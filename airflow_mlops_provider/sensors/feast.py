"""Sensor that waits until a Feast feature view has been materialized recently enough."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import FeatureStoreError
from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.triggers.feast import FeastFeatureFreshnessTrigger, freshness

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class FeastFeatureFreshnessSensor(BaseSensorOperator):
    """
    Wait until a feature view's most recent materialized end is within ``max_staleness``.

    :param feature_view: The feature view to watch (templated).
    :param max_staleness: Largest accepted age (a timedelta, or seconds) of the last
        materialized end, measured from now.
    :param feast_conn_id: Connection of type ``feast`` (templated).
    :param deferrable: Wait in the triggerer instead of holding a worker slot.
    """

    template_fields: Sequence[str] = ("feature_view", "feast_conn_id")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        feature_view: str,
        max_staleness: timedelta | int | float,
        feast_conn_id: str = FeastHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(feature_view, str) or not feature_view.strip():
            raise ValueError(f"feature_view must be a non-empty feature view name, got {feature_view!r}")
        if isinstance(max_staleness, bool) or not isinstance(max_staleness, (timedelta, int, float)):
            raise ValueError(f"max_staleness must be a timedelta or seconds, got {max_staleness!r}")
        if not isinstance(max_staleness, timedelta) and not max_staleness > 0:  # NaN too
            raise ValueError(f"max_staleness must be positive, got {max_staleness!r}")
        try:
            staleness = (
                max_staleness if isinstance(max_staleness, timedelta) else timedelta(seconds=max_staleness)
            )
            # The trigger gets seconds and builds the timedelta again: it must fit one too.
            timedelta(seconds=staleness.total_seconds())
        except OverflowError:
            raise ValueError(
                f"max_staleness must be at most about {timedelta.max.days - 1} days, got {max_staleness!r}"
            ) from None
        if staleness <= timedelta(0):
            raise ValueError(f"max_staleness must be positive, got {max_staleness!r}")
        self.feature_view = feature_view
        self.max_staleness = staleness
        self.feast_conn_id = feast_conn_id
        self.deferrable = deferrable

    def poke(self, context: Context) -> bool:
        hook = FeastHook(self.feast_conn_id)
        try:
            end = hook.most_recent_end_time(self.feature_view)
        except FeatureStoreError as err:
            raise AirflowFailException(str(err)) from err
        fresh, message = freshness(end, self.max_staleness, datetime.now(timezone.utc))
        self.log.info("Feature view %s %s", self.feature_view, message)
        return fresh

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            trigger=FeastFeatureFreshnessTrigger(
                feast_conn_id=self.feast_conn_id,
                feature_view=self.feature_view,
                max_staleness_seconds=self.max_staleness.total_seconds(),
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str | None:
        if not event or event.get("status") != "success":
            message = (event or {}).get("message", "no event")
            raise FeatureStoreError(f"Freshness check failed: {message}", feature_view=self.feature_view)
        self.log.info("%s", event["message"])
        return event.get("most_recent_end_time")
