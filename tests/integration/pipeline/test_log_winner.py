"""The example's winner is logged to MLflow whichever family wins (regression: family B).

MLflow 3.17 serializes sklearn models with skops by default, and skops refuses
HistGradientBoosting's tree predictors (``UntrustedTypesFoundException``), so
``log_winner_to_mlflow`` failed whenever family B won the sweep.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("family", ["A", "B"], ids=["logistic-regression", "hist-gradient-boosting"])
def test_the_winner_is_logged_and_loads_back(tmp_path, monkeypatch, family):
    import joblib
    import mlflow.sklearn
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    monkeypatch.syspath_prepend(str(REPO_ROOT / "dags"))  # as the DAG processor imports it
    from mlops_example.training import log_winner_to_mlflow

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    labels = (features[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    model = (LogisticRegression() if family == "A" else HistGradientBoostingClassifier(max_iter=5)).fit(
        features, labels
    )
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "mlflow", "extra": {"tracking_uri": tracking_uri}}),
    )
    monkeypatch.chdir(tmp_path)  # the run's artifacts (./mlruns) stay in the test's directory
    winner = {
        "trial_id": "t1", "family": family, "hparams": {"family": family}, "model_path": str(path),
        "metrics": {"val_auc": 0.9}, "test_auc": 0.88, "test_logloss": 0.3,
    }  # fmt: skip
    logged = log_winner_to_mlflow({"winner": winner}, experiment=f"log_winner_{family}")
    assert logged["family"] == family
    loaded = mlflow.sklearn.load_model(f"runs:/{logged['run_id']}/model")
    assert type(loaded) is type(model)
    assert (loaded.predict(features) == model.predict(features)).all()
