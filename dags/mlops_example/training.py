"""Training set from Feast's offline store, held-out evaluation, and logging the winner to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_example import FEATURE_VIEW, FEATURES, MODEL_NAME, example_home
from mlops_example.data import partition_path

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path


def training_set_path(start: datetime, home: Path | None = None) -> Path:
    return (home or example_home()) / "training_sets" / f"week={start:%Y-%m-%d}.npz"


def models_dir(run_key: str, home: Path | None = None) -> Path:
    return (home or example_home()) / "models" / run_key


def build_training_set(
    start: datetime, feast_conn_id: str = "feast_default", seed: int = 0
) -> dict[str, Any]:
    """
    Join the week's labels with point-in-time features from Feast's offline store and split
    them 60/20/20 into train, validation and a held-out test set (an ``.npz`` file).
    """
    import numpy as np
    import pandas as pd

    from airflow_mlops_provider.hooks.feast import FeastHook

    labels = pd.read_parquet(partition_path(start), columns=["customer_id", "event_timestamp", "churned"])
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True)
    store = FeastHook(feast_conn_id).get_conn()
    frame = store.get_historical_features(
        entity_df=labels, features=[f"{FEATURE_VIEW}:{name}" for name in FEATURES]
    ).to_df()
    frame = frame.dropna(subset=FEATURES).sort_values(["event_timestamp", "customer_id"])
    x = frame[FEATURES].to_numpy(dtype="float64")
    y = frame["churned"].to_numpy(dtype="int64")
    order = np.random.default_rng(seed).permutation(len(y))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    path = training_set_path(start)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        feature_names=np.array(FEATURES),
        **{f"X_{k}": x[idx] for k, idx in parts.items()},
        **{f"y_{k}": y[idx] for k, idx in parts.items()},
    )
    return {
        "path": str(path),
        **{f"rows_{k}": len(idx) for k, idx in parts.items()},
        "positive_rate": float(y.mean()),
    }


def evaluate_on_test_set(
    results: list[dict[str, Any]], data_path: str, metric: str = "val_auc"
) -> dict[str, Any]:
    """
    Take the best trial of each model family by its validation ``metric`` and score it on the
    held-out test set; the family with the best test AUC wins.
    """
    import joblib
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    data = np.load(data_path, allow_pickle=False)
    ok = [r for r in results if r and r.get("status", "success") == "success" and r.get(metric) is not None]
    if not ok:
        raise ValueError(f"no successful trial reported {metric!r}; results: {results!r}")
    best_by_family: dict[str, dict[str, Any]] = {}
    for record in ok:
        family = record["family"]
        if family not in best_by_family or record[metric] > best_by_family[family][metric]:
            best_by_family[family] = record
    candidates = []
    for _family, record in sorted(best_by_family.items()):
        model = joblib.load(record["model_path"])
        proba = model.predict_proba(data["X_test"])[:, 1]
        candidates.append(
            {
                **record,
                "test_auc": float(roc_auc_score(data["y_test"], proba)),
                "test_logloss": float(log_loss(data["y_test"], proba, labels=[0, 1])),
            }
        )
    winner = max(candidates, key=lambda c: c["test_auc"])
    return {"winner": winner, "candidates": candidates, "trials": len(results), "successful": len(ok)}


def log_winner_to_mlflow(
    evaluation: dict[str, Any], mlflow_conn_id: str = "mlflow_default", experiment: str = MODEL_NAME
) -> dict[str, Any]:
    """Log the winning model, its parameters and its test metrics as an MLflow run."""
    import joblib
    import mlflow
    import mlflow.sklearn

    from airflow_mlops_provider.hooks.mlflow import MlflowHook

    hook = MlflowHook(mlflow_conn_id)
    winner = evaluation["winner"]
    mlflow.set_tracking_uri(hook.tracking_uri)
    mlflow.set_registry_uri(hook.registry_uri)
    mlflow.set_experiment(experiment)
    model = joblib.load(winner["model_path"])
    with mlflow.start_run(run_name=f"trial-{winner['trial_id']}") as run:
        mlflow.log_params({k: v for k, v in winner["params"].items()})
        mlflow.log_metrics(
            {
                k: float(winner[k])
                for k in ("val_auc", "val_logloss", "test_auc", "test_logloss")
                if k in winner
            }
        )
        mlflow.set_tags({"trial_id": winner["trial_id"], "family": winner["family"]})
        mlflow.sklearn.log_model(model, name="model")
    return {
        "run_id": run.info.run_id,
        "trial_id": winner["trial_id"],
        "family": winner["family"],
        "test_auc": winner["test_auc"],
    }
