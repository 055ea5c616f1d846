"""MLflow model registry operators: register a version, set an alias, promote a challenger.

Aliases replace MLflow's deprecated stages. Every new version and every alias move emits an
Airflow Asset event for the model (``mlflow-model://<name>``, see
:mod:`airflow_mlops_provider.assets.mlflow`), so a deployment DAG can be scheduled on it.

The operators live in :mod:`~airflow_mlops_provider.operators.mlflow_register` and
:mod:`~airflow_mlops_provider.operators.mlflow_alias`, what they share in
:mod:`~airflow_mlops_provider.operators.mlflow_common`, and their registry access in
:class:`~airflow_mlops_provider.hooks.mlflow.MlflowHook`; this module names them all.
"""

from __future__ import annotations

from airflow_mlops_provider.assets.mlflow import mlflow_model_uri
from airflow_mlops_provider.operators.mlflow_alias import MlflowPromoteModelOperator, MlflowSetAliasOperator
from airflow_mlops_provider.operators.mlflow_common import (
    MODES,
    PROMOTION_TAG_PREFIX,
    TI_KEY_TAG,
    MlflowRegistryBaseOperator,
    compare_metrics,
    parse_min_delta,
    positive_version,
    ti_identity_tags,
)
from airflow_mlops_provider.operators.mlflow_register import MlflowRegisterModelOperator

__all__ = [
    "MODES",
    "PROMOTION_TAG_PREFIX",
    "TI_KEY_TAG",
    "MlflowPromoteModelOperator",
    "MlflowRegisterModelOperator",
    "MlflowRegistryBaseOperator",
    "MlflowSetAliasOperator",
    "compare_metrics",
    "mlflow_model_uri",
    "parse_min_delta",
    "positive_version",
    "ti_identity_tags",
]
