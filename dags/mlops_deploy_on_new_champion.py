"""Deploy on a new champion: runs whenever the training pipeline moves the ``production`` alias.

Scheduled on the registered model's Asset (``mlflow-model://churn_classifier``). It loads the
model that holds the ``production`` alias and scores the latest week of customers in a batch,
writing the predictions next to the data and returning a summary.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag, task

from airflow_mlops_provider.assets.mlflow import mlflow_model_asset

MODEL_NAME = os.environ.get("MLOPS_EXAMPLE_MODEL_NAME", "churn_classifier")


@dag(
    dag_id="mlops_deploy_on_new_champion",
    schedule=[mlflow_model_asset(MODEL_NAME)],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "example"],
    doc_md=__doc__,
)
def mlops_deploy_on_new_champion():
    @task
    def batch_predict(triggering_asset_events=None) -> dict:
        import mlflow
        import pandas as pd
        from mlops_example import FEATURES, example_home
        from mlops_example.data import features_path

        from airflow_mlops_provider.hooks.mlflow import MlflowHook

        events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
        hook = MlflowHook()
        mlflow.set_tracking_uri(hook.tracking_uri)
        mlflow.set_registry_uri(hook.registry_uri)
        version = hook.get_conn().get_model_version_by_alias(MODEL_NAME, "production")
        model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@production")
        features = pd.read_parquet(features_path())
        latest = features.sort_values("event_timestamp").groupby("customer_id").tail(1)
        scores = model.predict_proba(latest[FEATURES].to_numpy(dtype="float64"))[:, 1]
        out = example_home() / "predictions" / f"v{version.version}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"customer_id": latest["customer_id"], "churn_score": scores}).to_parquet(
            out, index=False
        )
        return {
            "model": MODEL_NAME,
            "version": version.version,
            "customers_scored": len(scores),
            "mean_churn_score": round(float(scores.mean()), 4),
            "predictions": str(out),
            "triggered_by": [e.extra for e in events] if events else [],
        }

    batch_predict()


mlops_deploy_on_new_champion()
