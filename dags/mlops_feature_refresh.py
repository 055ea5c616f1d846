"""Hourly feature refresh: incremental materialization into the online store, then a freshness check.

``feast_materialize_incremental`` loads everything new since the last materialization up to the
end of the run's data interval (never "now", so a rerun repeats the same work), and
``features_fresh`` waits (deferred, off the worker) until the feature view's latest materialized
end time is within two hours.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag

from airflow_mlops_provider.operators.feast import FeastMaterializeIncrementalOperator
from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor


@dag(
    dag_id="mlops_feature_refresh",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "example"],
    doc_md=__doc__,
)
def mlops_feature_refresh():
    materialize = FeastMaterializeIncrementalOperator(
        task_id="feast_materialize_incremental", feature_views=["customer_features"]
    )
    fresh = FeastFeatureFreshnessSensor(
        task_id="features_fresh",
        feature_view="customer_features",
        max_staleness=timedelta(hours=2),
        poke_interval=30,
        timeout=3600,
    )
    materialize >> fresh


mlops_feature_refresh()
