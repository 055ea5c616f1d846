"""A small sweep for the sweep view's tests: 6 grid trials in 3 mapped batches, one failing trial."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task

SPACE = {"lr": [0.001, 0.01, 0.1], "optimizer": ["adam", "sgd"]}


@trial_task
def train(lr: float, optimizer: str) -> dict:
    """Loss is lr (+0.5 for sgd); lr=0.1 with sgd diverges, with an error that holds markup."""
    if lr == 0.1 and optimizer == "sgd":
        raise ValueError("diverged: loss is nan <script>alert(1)</script>")
    return {"loss": lr + (0.5 if optimizer == "sgd" else 0.0), "acc": 1.0 - lr}


@dag(
    dag_id="plugin_sweep",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params=sweep_params(search_space=SPACE, strategy="grid", max_parallel_tasks=3, gpus_per_trial=1),
    tags=["mlops", "test"],
)
def plugin_sweep():
    # its own connection (tests/integration/plugin/conftest.py: SWEEP_CONN_ID), with a ui_url
    batches = plan_sweep(experiment_name="plugin_sweep", mlflow_conn_id="mlflow_a_sweep")
    select_best_trial(train.expand_kwargs(batches), batches)


plugin_sweep()
