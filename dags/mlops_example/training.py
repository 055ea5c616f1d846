"""Training set from Feast's offline store, held-out evaluation, and logging the winner to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_example import FEATURE_VIEW, FEATURES, MODEL_NAME, example_home
from mlops_example.data import partition_path

if TYPE_CHECKING:
    from datetime import datetime


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


def family_of(record: dict[str, Any]) -> str:
    """Return a trial record's model family (the trainer reports it; the search spaces set it)."""
    family = (record.get("outputs") or {}).get("family") or (record.get("hparams") or {}).get("family")
    if not family:
        raise ValueError(f"trial {record.get('trial_id')!r} names no model family: {record!r}")
    return str(family)


def best_of_each_family(leaderboard: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    Return the best successful trial of each family, from ``select_best_trial``'s leaderboard.

    The leaderboard is already ranked by the sweep's metric and mode, best first, so the first
    successful record of a family is its best.
    """
    best: dict[str, dict[str, Any]] = {}
    for record in leaderboard:
        if record.get("status") == "success":
            best.setdefault(family_of(record), record)
    return best


def leaderboard_rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the leaderboard of ``select_best_trial`` as the summary's rows (best first, then failures)."""
    rows = []
    for record in sweep["leaderboard"]:
        outputs = record.get("outputs") or {}
        rows.append(
            {
                "rank": record.get("rank"),
                "trial_id": record["trial_id"],
                "family": outputs.get("family") or (record.get("hparams") or {}).get("family"),
                "hparams": record.get("hparams") or {},
                "status": record.get("status"),
                "metrics": record.get("metrics") or {},
                "cached": bool(record.get("cached")),
                "mlflow_run_id": record.get("mlflow_run_id"),
                "gpus": outputs.get("gpus"),
                "hostname": outputs.get("hostname"),
                "error": record.get("error"),
            }
        )
    return rows


def evaluate_on_test_set(sweep: dict[str, Any], data_path: str) -> dict[str, Any]:
    """
    Score the best trial of each model family on the held-out test set; the best test AUC wins.

    :param sweep: The result of ``select_best_trial``: the leaderboard of records, each with the
        trial's ``hparams``, ``metrics`` and ``outputs`` (``model_path``, ``family``).
    :param data_path: The training set (``.npz``) with the test split.
    """
    import joblib
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    data = np.load(data_path, allow_pickle=False)
    best_by_family = best_of_each_family(sweep["leaderboard"])
    if not best_by_family:
        raise ValueError(f"no successful trial in the leaderboard: {sweep['leaderboard']!r}")
    candidates = []
    for family, record in sorted(best_by_family.items()):
        model_path = Path((record.get("outputs") or {}).get("model_path") or "")
        if not model_path.is_file():
            raise FileNotFoundError(
                f"trial {record['trial_id']} (family {family}, cached={record.get('cached')}) has no model "
                f"file at {str(model_path)!r}; trigger the run again with cache 'off' to retrain it"
            )
        model = joblib.load(model_path)
        proba = model.predict_proba(data["X_test"])[:, 1]
        candidates.append(
            {
                "trial_id": record["trial_id"],
                "family": family,
                "hparams": record.get("hparams") or {},
                "metrics": record.get("metrics") or {},
                "model_path": str(model_path),
                "cached": bool(record.get("cached")),
                "mlflow_run_id": record.get("mlflow_run_id"),
                "test_auc": float(roc_auc_score(data["y_test"], proba)),
                "test_logloss": float(log_loss(data["y_test"], proba, labels=[0, 1])),
            }
        )
    winner = max(candidates, key=lambda c: c["test_auc"])
    return {
        "winner": winner,
        "candidates": candidates,
        "trials": sweep["n_trials"],
        "successful": sweep["n_succeeded"],
        "cached": sweep.get("n_cached", 0),
    }


def log_winner_to_mlflow(
    evaluation: dict[str, Any], mlflow_conn_id: str = "mlflow_default", experiment: str = MODEL_NAME
) -> dict[str, Any]:
    """
    Log the winning model, its parameters and its validation and test metrics as an MLflow run.

    The run is tagged with the trial's own run of the sweep (``mlops.trial_run_id``), where its
    validation metrics were logged as the trial ran.
    """
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
    metrics = {k: float(v) for k, v in winner["metrics"].items() if k.startswith("val_")}
    metrics.update(test_auc=winner["test_auc"], test_logloss=winner["test_logloss"])
    tags = {"trial_id": winner["trial_id"], "family": winner["family"]}
    if winner.get("mlflow_run_id"):
        tags["mlops.trial_run_id"] = winner["mlflow_run_id"]
    with mlflow.start_run(run_name=f"trial-{winner['trial_id']}") as run:
        mlflow.log_params({"family": winner["family"], **winner["hparams"]})
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        # cloudpickle, as MLflow wrote sklearn models before 3.17: 3.17's default (skops)
        # refuses HistGradientBoosting's tree predictors (UntrustedTypesFoundException).
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return {
        "run_id": run.info.run_id,
        "trial_id": winner["trial_id"],
        "family": winner["family"],
        "test_auc": winner["test_auc"],
    }
