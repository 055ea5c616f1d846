"""Smoke DAG: checks that the provider imports and that Resources survives XCom."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.compute import Resources


@dag(
    dag_id="mlops_smoke",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "example"],
)
def mlops_smoke():
    @task
    def describe() -> dict:
        return Resources(cpus=1, memory="512Mi", gpus=0).to_dict()

    @task
    def check(resources: dict) -> str:
        parsed = Resources.from_dict(resources)
        assert parsed.memory == 512 * 1024**2, parsed
        return parsed.to_json()

    check(describe())


mlops_smoke()
