"""Support code of the example ML pipeline (imported inside tasks, never at DAG parse time).

Everything lives under one working directory, ``MLOPS_EXAMPLE_HOME`` (default
``$AIRFLOW_HOME/mlops-example``): generated data partitions, the Feast feature repo, training
sets, trained models and batch predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_NAME = os.environ.get("MLOPS_EXAMPLE_MODEL_NAME", "churn_classifier")
FEATURE_VIEW = "customer_features"
FEATURES = ["tenure_months", "monthly_charges", "support_calls_30d", "usage_gb_30d", "contract_monthly"]


def example_home() -> Path:
    """Return the example's working directory (created on first use)."""
    default = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "mlops-example"
    home = Path(os.environ.get("MLOPS_EXAMPLE_HOME", default)).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home
