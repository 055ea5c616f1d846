"""The full ML workflow: data -> features -> sweep of two model families -> evaluate -> register -> promote -> deploy.

Weekly, or triggered from the UI with a validated form (search spaces, trials, GPUs per trial):

1. ``extract``: generate last week's churn data (synthetic, drifting) into the data interval's partition;
2. ``feast_apply`` + ``feast_materialize``: register the features and load the interval into the online store;
3. ``build_training_set``: point-in-time join of the week's labels with Feast's offline store;
4. ``train``: the sweep, one container per trial (``container_operator``: Docker in development,
   Kubernetes in production, a local process where neither exists), model family A (logistic
   regression) and B (gradient-boosted trees), resources from the form;
5. ``evaluate``: best trial of each family scored on a held-out test set;
6. ``log_model`` + ``register``: the winner becomes a new version of the registered model;
7. ``promote``: champion/challenger on test AUC; moves ``champion`` only if better by ``min_delta``;
8. ``deploy``: on promotion, move the ``production`` alias; that emits the model's Asset event,
   which triggers ``mlops_deploy_on_new_champion``.

Nothing here does I/O at parse time; heavy libraries are imported inside the tasks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, conf, dag, task

from airflow_mlops_provider.operators.container import container_operator
from airflow_mlops_provider.operators.feast import FeastApplyOperator, FeastMaterializeOperator
from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)
from airflow_mlops_provider.params import (
    gpus_per_trial_param,
    metric_param,
    mode_param,
    n_trials_param,
    search_space_param,
    seed_param,
    strategy_param,
)

MODEL_NAME = os.environ.get("MLOPS_EXAMPLE_MODEL_NAME", "churn_classifier")
RUNTIME = os.environ.get("MLOPS_EXAMPLE_RUNTIME") or conf.get("mlops", "runtime", fallback="docker")
TRAINER_IMAGE = os.environ.get("MLOPS_TRAINER_IMAGE", "mlops-trainer:latest")
_DEFAULT_HOME = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "mlops-example"
EXAMPLE_HOME = str(Path(os.environ.get("MLOPS_EXAMPLE_HOME", _DEFAULT_HOME)).resolve())
TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "trainer" / "train.py"


def _runtime_arguments() -> dict:
    """What only one runtime needs: the command's path, and the shared working directory."""
    if RUNTIME == "local":
        return {"command": [sys.executable, str(TRAIN_SCRIPT)]}
    arguments: dict = {"image": TRAINER_IMAGE, "command": ["python3", "/opt/mlops/train.py"]}
    if RUNTIME == "docker":
        # The example's working directory is bind-mounted at the same path, so paths in XCom
        # mean the same thing inside and outside the container.
        arguments["docker_kwargs"] = {
            "mounts": [{"Target": EXAMPLE_HOME, "Source": EXAMPLE_HOME, "Type": "bind", "ReadOnly": False}],
            "network_mode": "none",
        }
    return arguments


@dag(
    dag_id="mlops_training_pipeline",
    # A data-interval timetable: each run owns last week [start, end), also when triggered by hand.
    schedule=CronDataIntervalTimetable("0 0 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "example"],
    doc_md=__doc__,
    params={
        "search_space_a": search_space_param(
            {"C": {"distribution": "float", "low": 0.001, "high": 10.0, "log": True}},
            title="Search space, family A (logistic regression)",
        ),
        "search_space_b": search_space_param(
            {
                "learning_rate": {"distribution": "float", "low": 0.03, "high": 0.3, "log": True},
                "max_depth": [3, 5, 8],
                "max_iter": {"distribution": "int", "low": 50, "high": 200},
            },
            title="Search space, family B (gradient-boosted trees)",
        ),
        "strategy": strategy_param("random"),
        "n_trials": n_trials_param(3, maximum=200),
        "seed": seed_param(0),
        "gpus_per_trial": gpus_per_trial_param(0, maximum=8),
        "memory_per_trial": Param(
            "1Gi",
            type="string",
            pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|[kKmMgGtT])?$",
            title="Memory per trial",
            description="e.g. 512Mi, 2Gi",
        ),
        "metric": metric_param("val_auc"),
        "mode": mode_param("max"),
        "rows_per_week": Param(4000, type="integer", minimum=200, maximum=1_000_000, title="Rows per week"),
        "min_delta": Param(
            0.0,
            type="number",
            minimum=0,
            maximum=1,
            title="Promotion margin",
            description="The challenger replaces the champion only if its test AUC is higher by more than this",
        ),
    },
)
def mlops_training_pipeline():
    @task
    def extract(data_interval_start=None, data_interval_end=None, params=None) -> dict:
        from mlops_example.data import write_week
        from mlops_example.feature_repo import write_feature_repo

        write_feature_repo()
        return write_week(data_interval_start, data_interval_end, n_customers=params["rows_per_week"])

    feast_apply = FeastApplyOperator(task_id="feast_apply")
    feast_materialize = FeastMaterializeOperator(task_id="feast_materialize")

    @task
    def build_training_set(data_interval_start=None, params=None) -> dict:
        from mlops_example.training import build_training_set as build

        return build(data_interval_start, seed=params["seed"])

    @task
    def plan_trials(training_set: dict, params=None, run_id=None) -> list[dict]:
        """One entry of ``expand_kwargs`` per trial: its env (the trial) and its resources."""
        import json
        import re

        from mlops_example import example_home

        from airflow_mlops_provider.sweeps.space import trials_from_grid, trials_from_random

        trials = []
        for family, key in (("A", "search_space_a"), ("B", "search_space_b")):
            space = {**params[key], "family": family}
            if params["strategy"] == "grid":
                trials += trials_from_grid(space)
            else:
                trials += trials_from_random(space, params["n_trials"], params["seed"])
        resources = {"memory": params["memory_per_trial"], "gpus": params["gpus_per_trial"]}
        models = example_home() / "models" / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
        return [
            {
                "env": {
                    "MLOPS_TRIAL": json.dumps(trial),
                    "MLOPS_DATA": training_set["path"],
                    "MLOPS_MODELS_DIR": str(models),
                },
                "resources": resources,
            }
            for trial in trials
        ]

    training_set = build_training_set()
    trials = plan_trials(training_set)
    train = container_operator(RUNTIME).partial(task_id="train", **_runtime_arguments()).expand_kwargs(trials)

    @task(trigger_rule="all_done")
    def evaluate(results, params=None, ti=None) -> dict:
        from mlops_example.training import evaluate_on_test_set

        from airflow_mlops_provider.sweeps.select import select_best

        records = [dict(r, status="success") for r in results if r]
        sweep = select_best(records, metric=params["metric"], mode=params["mode"], min_success_ratio=0.5)
        training_set = ti.xcom_pull(task_ids="build_training_set")
        evaluation = evaluate_on_test_set(records, training_set["path"], metric=params["metric"])
        evaluation["leaderboard"] = [
            {k: r.get(k) for k in ("rank", "trial_id", "params", "metrics", "gpus", "hostname")}
            for r in sweep["leaderboard"]
        ]
        return evaluation

    @task
    def log_model(evaluation: dict) -> dict:
        from mlops_example.training import log_winner_to_mlflow

        return log_winner_to_mlflow(evaluation)

    evaluation = evaluate(train.output)
    logged = log_model(evaluation)

    register = MlflowRegisterModelOperator(
        task_id="register",
        model_name=MODEL_NAME,
        run_id="{{ ti.xcom_pull(task_ids='log_model')['run_id'] }}",
        artifact_path="model",
        tags={"pipeline": "mlops_training_pipeline"},
        emit_asset_event=False,
    )
    promote = MlflowPromoteModelOperator(
        task_id="promote",
        model_name=MODEL_NAME,
        challenger_version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        metric="test_auc",
        mode="max",
        alias="champion",
        min_delta="{{ params.min_delta }}",
        emit_asset_event=False,
    )

    @task.branch
    def decide(decision: dict) -> str:
        return "deploy" if decision.get("promoted") else "keep_champion"

    deploy = MlflowSetAliasOperator(
        task_id="deploy",
        model_name=MODEL_NAME,
        alias="production",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
    )

    @task
    def keep_champion(decision: dict) -> dict:
        return decision

    @task(trigger_rule="none_failed_min_one_success")
    def summary(evaluation: dict, registered: dict, decision: dict) -> dict:
        import json

        from mlops_example import example_home

        result = {
            "trials": evaluation["trials"],
            "successful_trials": evaluation["successful"],
            "best_trial": evaluation["winner"]["trial_id"],
            "best_family": evaluation["winner"]["family"],
            "best_params": evaluation["winner"]["params"],
            "test_auc": evaluation["winner"]["test_auc"],
            "registered_version": registered["version"],
            "promoted": bool(decision.get("promoted")),
            "decision": decision,
            "leaderboard": evaluation["leaderboard"],
        }
        (example_home() / "summary.json").write_text(json.dumps(result, indent=2, default=str))
        return result

    extracted = extract()
    extracted >> feast_apply >> feast_materialize >> training_set
    logged >> register >> promote
    kept = keep_champion(promote.output)
    decide(promote.output) >> [deploy, kept]
    [deploy, kept] >> summary(evaluation, register.output, promote.output)


mlops_training_pipeline()
