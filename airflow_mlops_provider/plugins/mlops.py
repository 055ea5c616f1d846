"""The provider's Airflow plugin, loaded through the ``airflow.plugins`` entry point."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class MlopsPlugin(AirflowPlugin):
    """Registers airflow-mlops-provider with Airflow's plugin manager."""

    name = "mlops"
