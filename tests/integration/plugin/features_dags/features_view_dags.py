"""A DAG the Features view test runs with ``airflow dags test``: apply, then one materialize task per view."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import CronDataIntervalTimetable, dag

from airflow_mlops_provider.operators.feast import (
    FeastApplyOperator,
    FeastMaterializeOperator,
    per_feature_view,
)


@dag(
    dag_id="mlops_plugin_features",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["feast", "test"],
)
def mlops_plugin_features():
    apply = FeastApplyOperator(task_id="apply", feast_conn_id="feast_plugin")
    materialize = FeastMaterializeOperator.partial(
        task_id="materialize", feast_conn_id="feast_plugin"
    ).expand(feature_views=per_feature_view(["fv_0", "fv_1"]))
    apply >> materialize


mlops_plugin_features()
