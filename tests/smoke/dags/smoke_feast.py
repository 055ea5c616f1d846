"""Smoke DAG: apply a Feast repo, then materialize the run's data interval into its online store."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import CronDataIntervalTimetable, dag

from airflow_mlops_provider.operators.feast import FeastApplyOperator, FeastMaterializeOperator


@dag(
    dag_id="smoke_feast",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
)
def smoke_feast():
    FeastApplyOperator(task_id="apply") >> FeastMaterializeOperator(task_id="materialize")


smoke_feast()
