"""The example's winner is logged to MLflow whichever family wins (regression: family B).

MLflow 3.17 serializes sklearn models with skops by default, and skops refuses
HistGradientBoosting's tree predictors (``UntrustedTypesFoundException``), so
``log_winner_to_mlflow`` failed whenever family B won the sweep.

Each case runs in its own process, as the task does: ``mlflow.set_tracking_uri`` also writes
``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` into ``os.environ``, which would leak into every
later ``airflow`` subprocess of the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
import joblib, mlflow.sklearn, numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from mlops_example.training import log_winner_to_mlflow

family, path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
features = rng.normal(size=(200, 3))
labels = (features[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
model = (LogisticRegression() if family == "A" else HistGradientBoostingClassifier(max_iter=5)).fit(
    features, labels
)
joblib.dump(model, path)
winner = {
    "trial_id": "t1", "family": family, "hparams": {"family": family}, "model_path": path,
    "metrics": {"val_auc": 0.9}, "test_auc": 0.88, "test_logloss": 0.3,
}
logged = log_winner_to_mlflow({"winner": winner}, experiment="log_winner_" + family)
loaded = mlflow.sklearn.load_model("runs:/" + logged["run_id"] + "/model")
print(json.dumps({
    "family": logged["family"],
    "same_type": type(loaded) is type(model),
    "same_predictions": bool((loaded.predict(features) == model.predict(features)).all()),
}))
"""


@pytest.mark.parametrize("family", ["A", "B"], ids=["logistic-regression", "hist-gradient-boosting"])
def test_the_winner_is_logged_and_loads_back(tmp_path, family):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT / "dags"),  # as the DAG processor imports the example's package
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps(
            {"conn_type": "mlflow", "extra": {"tracking_uri": tracking_uri}}
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, family, str(tmp_path / "model.joblib")],
        env=env,
        cwd=tmp_path,  # the run's artifacts (./mlruns) stay in the test's directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"family": family, "same_type": True, "same_predictions": True}
