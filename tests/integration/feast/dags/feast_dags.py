"""DAGs the Feast integration tests run with ``airflow dags test``.

``feast_e2e`` materializes the same data interval three ways, each into its own copy of the
repo: one task for all views (``feast_single``), one mapped task per feature view
(``feast_fanout``) and a chunked backfill mapped with ``expand_kwargs`` (``feast_chunked``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import CronDataIntervalTimetable, dag, task

from airflow_mlops_provider.operators.feast import (
    FeastApplyOperator,
    FeastMaterializeOperator,
    backfill_chunks,
    per_feature_view,
)
from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor

VIEWS = ["fv_0", "fv_1"]


@dag(
    dag_id="feast_e2e",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["feast", "test"],
)
def feast_e2e():
    apply_single = FeastApplyOperator(task_id="apply_single", feast_conn_id="feast_single")
    materialize_single = FeastMaterializeOperator(task_id="materialize_single", feast_conn_id="feast_single")
    fresh = FeastFeatureFreshnessSensor(
        task_id="fresh",
        feast_conn_id="feast_single",
        feature_view="fv_0",
        max_staleness=timedelta(days=36500),
        poke_interval=1,
        timeout=60,
    )
    apply_single >> materialize_single >> fresh

    apply_fanout = FeastApplyOperator(task_id="apply_fanout", feast_conn_id="feast_fanout")
    fanout = FeastMaterializeOperator.partial(
        task_id="materialize_fanout", feast_conn_id="feast_fanout"
    ).expand(feature_views=per_feature_view(VIEWS))
    apply_fanout >> fanout

    @task
    def chunks(data_interval_start=None, data_interval_end=None):
        return backfill_chunks(data_interval_start, data_interval_end, chunk=timedelta(hours=5))

    apply_chunked = FeastApplyOperator(task_id="apply_chunked", feast_conn_id="feast_chunked")
    chunked = FeastMaterializeOperator.partial(
        task_id="materialize_chunked", feast_conn_id="feast_chunked"
    ).expand_kwargs(chunks())
    apply_chunked >> chunked


feast_e2e()
