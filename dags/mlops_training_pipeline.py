"""The full ML workflow: data -> features -> sweep of two model families -> evaluate -> register -> promote -> deploy.

Weekly, or triggered from the UI with a validated form (search spaces, trials, GPUs per trial, cache):

1. ``extract``: generate last week's churn data (synthetic, drifting) into the data interval's partition;
2. ``feast_apply`` + ``feast_materialize``: register the features and load the interval into the online store;
3. ``build_training_set``: point-in-time join of the week's labels with Feast's offline store;
4. the sweep, three tasks of this package: ``plan_sweep`` draws the trials of model family A
   (logistic regression) and B (gradient-boosted trees) from the two search spaces,
   ``train`` runs one container per trial (``container_trials``: Docker in development,
   Kubernetes in production, a local process where neither exists) with the resources from the
   form, and ``select_best_trial`` ranks them. Every trial is an MLflow run, a child of the
   sweep's run in the experiment ``mlops_training_pipeline`` (connection ``mlflow_default``);
5. ``evaluate``: the best trial of each family, from the leaderboard, scored on a held-out test set;
6. ``log_model`` + ``register``: the winner becomes a new version of the registered model;
7. ``promote``: champion/challenger on test AUC; moves ``champion`` only if better by ``min_delta``;
8. ``deploy``: on promotion, move the ``production`` alias; that emits the model's Asset event,
   which triggers ``mlops_deploy_on_new_champion``.

**Trial cache.** A trial is trained once per cache key: a rerun of the same week (a retried or
cleared DAG run, or a manual run of an interval already trained) reuses the results MLflow holds
and starts no container. The key (form field ``cache_key``) is the *data version*, the data
interval plus the two params that shape the training set (``rows_per_week``, ``seed``), and the
*code version*, the trainer image's id (``trainer_version()``: the local image's digest on Docker,
the image reference on Kubernetes, a hash of ``train.py`` on the local runtime). New data or a
rebuilt trainer trains again; so does ``cache: off`` in the form.

Nothing here does I/O at parse time; heavy libraries are imported inside the tasks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, conf, dag, task

from airflow_mlops_provider.operators.feast import FeastApplyOperator, FeastMaterializeOperator
from airflow_mlops_provider.operators.mlflow import (
    MlflowPromoteModelOperator,
    MlflowRegisterModelOperator,
    MlflowSetAliasOperator,
)
from airflow_mlops_provider.params import (
    cache_key_param,
    cache_param,
    gpus_per_trial_param,
    metric_param,
    min_success_ratio_param,
    mode_param,
    n_trials_param,
    search_space_param,
    seed_param,
    strategy_param,
)
from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

log = logging.getLogger(__name__)

MODEL_NAME = os.environ.get("MLOPS_EXAMPLE_MODEL_NAME", "churn_classifier")
RUNTIME = os.environ.get("MLOPS_EXAMPLE_RUNTIME") or conf.get("mlops", "runtime", fallback="docker")
TRAINER_IMAGE = os.environ.get("MLOPS_TRAINER_IMAGE", "mlops-trainer:latest")
_DEFAULT_HOME = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "mlops-example"
EXAMPLE_HOME = str(Path(os.environ.get("MLOPS_EXAMPLE_HOME", _DEFAULT_HOME)).resolve())
TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "trainer" / "train.py"
#: What a cached trial must share besides its parameters: the data version and the code version.
CACHE_KEY = (
    "week {{ data_interval_start | ds }}..{{ data_interval_end | ds }}"
    " rows {{ params.rows_per_week }} seed {{ params.seed }} trainer {{ trainer_version() }}"
)


def trainer_version() -> str:
    """
    Return the trainer's code version for the cache key (a template macro, called at run time).

    The local image's id on Docker (so a rebuilt ``:latest`` counts as new code), the image
    reference on Kubernetes (tag your images per version), a hash of ``train.py`` locally.
    """
    if RUNTIME == "local":
        return "train.py@" + hashlib.sha256(TRAIN_SCRIPT.read_bytes()).hexdigest()[:16]
    if RUNTIME == "docker":
        import docker
        from docker.errors import DockerException

        try:
            client = docker.from_env(timeout=30)
            try:
                return f"{TRAINER_IMAGE}@{client.images.get(TRAINER_IMAGE).id}"
            finally:
                client.close()
        except (DockerException, OSError) as err:
            log.warning(
                "Cannot read the id of image %s (%s); the cache key uses its name", TRAINER_IMAGE, err
            )
    return TRAINER_IMAGE


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
    user_defined_macros={"trainer_version": trainer_version},
    params={
        "search_space_a": search_space_param(
            {"family": "A", "C": {"distribution": "float", "low": 0.001, "high": 10.0, "log": True}},
            title="Search space, family A (logistic regression)",
        ),
        "search_space_b": search_space_param(
            {
                "family": "B",
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
        "min_success_ratio": min_success_ratio_param(0.5),
        "cache": cache_param("readwrite"),
        "cache_key": cache_key_param(CACHE_KEY),
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

    training_set = build_training_set()

    # The sweep: family A and B, from the form; one container per trial, each an MLflow run.
    batches = plan_sweep(
        search_space_params=["search_space_a", "search_space_b"],
        resources={"memory": "{{ params.memory_per_trial }}"},
    )
    results = container_trials(
        task_id="train",
        batches=batches,
        runtime=RUNTIME,
        env={
            "MLOPS_DATA": "{{ ti.xcom_pull(task_ids='build_training_set')['path'] }}",
            "MLOPS_MODELS_DIR": EXAMPLE_HOME + "/models/{{ run_id | replace(':', '_') | replace('+', '_') }}",
        },
        **_runtime_arguments(),
    )
    sweep = select_best_trial(results, batches)
    training_set >> batches

    @task
    def evaluate(sweep: dict, ti=None) -> dict:
        from mlops_example.training import evaluate_on_test_set, leaderboard_rows

        training_set = ti.xcom_pull(task_ids="build_training_set")
        evaluation = evaluate_on_test_set(sweep, training_set["path"])
        evaluation["leaderboard"] = leaderboard_rows(sweep)
        return evaluation

    @task
    def log_model(evaluation: dict) -> dict:
        from mlops_example.training import log_winner_to_mlflow

        return log_winner_to_mlflow(evaluation)

    evaluation = evaluate(sweep)
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
    def summary(evaluation: dict, registered: dict, decision: dict, ti=None) -> dict:
        import json

        from mlops_example import example_home

        from airflow_mlops_provider.sweeps.tasks import PLAN_KEY

        tracking = (ti.xcom_pull(task_ids="plan_sweep", key=PLAN_KEY) or {}).get("tracking") or {}
        winner = evaluation["winner"]
        result = {
            "trials": evaluation["trials"],
            "successful_trials": evaluation["successful"],
            "cached_trials": evaluation["cached"],
            "best_trial": winner["trial_id"],
            "best_family": winner["family"],
            "best_params": winner["hparams"],
            "test_auc": winner["test_auc"],
            "registered_version": registered["version"],
            "promoted": bool(decision.get("promoted")),
            "decision": decision,
            "leaderboard": evaluation["leaderboard"],
            "mlflow": {
                key: tracking.get(key) for key in ("experiment_name", "experiment_id", "parent_run_id")
            },
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
