"""Deferrable sensors the chaos suite leaves waiting in the triggerer, then kills the triggerer.

``wait_model`` waits for alias ``champion`` on the registered model named by ``params.model``,
through the fault proxy's ``mlflow_chaos`` connection; ``wait_features`` waits for feature view
``fv_0`` of the ``feast_chaos_sensors`` repo (Redis online store with a password) to be fresh.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor
from airflow_mlops_provider.sensors.mlflow import MlflowModelVersionSensor

with DAG(
    "chaos_sensors",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"model": Param("chaos-sensor-model", type="string")},
    tags=["chaos"],
):
    MlflowModelVersionSensor(
        task_id="wait_model",
        model_name="{{ params.model }}",
        alias="champion",
        mlflow_conn_id="mlflow_chaos",
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )
    FeastFeatureFreshnessSensor(
        task_id="wait_features",
        feature_view="fv_0",
        max_staleness=3600,
        feast_conn_id="feast_chaos_sensors",
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )
