"""Train one trial of the example churn model and write its result for the orchestrator.

Runs inside the trainer container (GpuDockerOperator / GpuKubernetesPodOperator) or as a local
process (the demo's local runtime); the code is the same. Inputs come from the environment:

- ``MLOPS_TRIAL``: the trial as JSON, ``{"trial_id": ..., "hparams": {"family": "A"|"B", ...},
  "resources": {...}}`` (what ``container_trials`` hands each trial); without ``family`` the
  family is told from the parameters (``C``: A; ``learning_rate``/``max_depth``/``max_iter``: B);
- ``MLOPS_DATA``: the training set written by the pipeline (``.npz`` with X_train, y_train,
  X_val, y_val, feature_names);
- ``MLOPS_MODELS_DIR``: where to save the fitted model (``<trial_id>-<MLFLOW_RUN_ID>.joblib``,
  or ``<trial_id>.joblib`` untracked);
- ``MLOPS_RESULT_FILE``: where to write the result JSON (default ``/airflow/xcom/return.json``,
  the path KubernetesPodOperator's sidecar and GpuDockerOperator read).

Family A is a scaled logistic regression (``C``); family B is a histogram gradient-boosted tree
model (``learning_rate``, ``max_depth``, ``max_iter``). The result is the sweep's format: the
metrics as numbers (validation AUC and log loss, fit time), and under ``"outputs"`` what is not a
metric: the family, the model path, the GPUs the runtime assigned (``NVIDIA_VISIBLE_DEVICES``)
and the hostname::

    {"val_auc": 0.81, "val_logloss": 0.42, "fit_seconds": 0.3,
     "outputs": {"family": "B", "model_path": ".../ab12.joblib", "gpus": "", "hostname": "..."}}

The trainer needs no MLflow client: the orchestrator logs each trial as an MLflow run (whose id
it is given in ``MLFLOW_RUN_ID``, printed here for the log).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

FAMILIES = {"A": "logistic_regression", "B": "hist_gradient_boosting"}
#: The parameters that tell a family when the trial names none.
FAMILY_PARAMS = {"A": {"C"}, "B": {"learning_rate", "max_depth", "max_iter"}}


def family_of(params: dict) -> str:
    """Return the trial's model family: its ``family`` parameter, else the one its parameters name."""
    if "family" in params:
        return str(params["family"])
    found = [family for family, names in FAMILY_PARAMS.items() if names & set(params)]
    if len(found) != 1:
        raise SystemExit(
            f"cannot tell the model family of parameters {params!r}: set 'family' to one of {sorted(FAMILIES)}"
        )
    return found[0]


def build_model(family: str, params: dict):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "A":
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=float(params.get("C", 1.0)), max_iter=500)
        )
    if family == "B":
        return HistGradientBoostingClassifier(
            learning_rate=float(params.get("learning_rate", 0.1)),
            max_depth=int(params["max_depth"]) if params.get("max_depth") else None,
            max_iter=int(params.get("max_iter", 100)),
            random_state=0,
        )
    raise SystemExit(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")


def main() -> int:
    import joblib
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    trial = json.loads(os.environ["MLOPS_TRIAL"])
    params = dict(trial.get("hparams") or trial.get("params") or {})
    family = family_of(params)
    params.pop("family", None)
    data_path = os.environ["MLOPS_DATA"]
    models_dir = Path(os.environ["MLOPS_MODELS_DIR"])
    result_file = Path(os.environ.get("MLOPS_RESULT_FILE", "/airflow/xcom/return.json"))

    data = np.load(data_path, allow_pickle=False)
    print(f"trial {trial['trial_id']}: family {family} ({FAMILIES.get(family)}) params {params}", flush=True)
    print(f"train rows {len(data['y_train'])}, validation rows {len(data['y_val'])}", flush=True)
    print(f"GPUs assigned: {os.environ.get('NVIDIA_VISIBLE_DEVICES', 'none')}", flush=True)
    if os.environ.get("MLFLOW_RUN_ID"):
        print(f"MLflow run of this trial: {os.environ['MLFLOW_RUN_ID']}", flush=True)

    started = time.time()
    model = build_model(family, params)
    model.fit(data["X_train"], data["y_train"])
    fit_seconds = time.time() - started
    proba = model.predict_proba(data["X_val"])[:, 1]
    metrics = {
        "val_auc": float(roc_auc_score(data["y_val"], proba)),
        "val_logloss": float(log_loss(data["y_val"], proba, labels=[0, 1])),
        "fit_seconds": round(fit_seconds, 3),
    }
    models_dir.mkdir(parents=True, exist_ok=True)
    # One file per MLflow run of the trial: a retry rewrites its own file, and a run with another
    # cache key (new data or code) never overwrites the model a cached result points at.
    run_id = os.environ.get("MLFLOW_RUN_ID")
    model_path = models_dir / (
        f"{trial['trial_id']}-{run_id}.joblib" if run_id else f"{trial['trial_id']}.joblib"
    )
    joblib.dump(model, model_path)
    result = {
        **metrics,
        "outputs": {
            "family": family,
            "model_path": str(model_path),
            "gpus": os.environ.get("NVIDIA_VISIBLE_DEVICES", ""),
            "hostname": socket.gethostname(),
        },
    }
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result))
    print(f"val_auc={metrics['val_auc']:.4f} val_logloss={metrics['val_logloss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
