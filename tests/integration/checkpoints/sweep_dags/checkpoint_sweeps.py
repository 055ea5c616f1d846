"""Halving sweeps whose trials resume from their checkpoint in the next rung (airflow DAG).

Each trial "trains" ``budget`` steps in total: it restores its step count from
``$MLOPS_CHECKPOINT_DIR/state.json``, runs the steps still missing, saves the new count, and
appends ``<budget> <steps executed now>`` to ``$SWEEP_RESULT_DIR/counts/<trial_id>.txt``. With
resume, a trial promoted to budget 9 executes 9 steps over all its rungs, not 1 + 3 + 9.

- ``ckpt_halving_python``: Python trials, halving(1, 9, eta=3) over 9 trials;
- ``ckpt_halving_docker``: container trials, halving(1, 4, eta=2) over 4 trials.
Both checkpoint to ``$CKPT_URI`` through the aws connection ``ckpt_s3`` and delete the losers'
checkpoints after the selection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import container_trials, halving, halving_sweep, trial_task

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 1, "high": 10},
}
URI = os.environ.get("CKPT_URI", "")
IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
RESULTS = os.environ.get("SWEEP_RESULT_DIR", "/tmp")


@trial_task(checkpoint=URI, checkpoint_conn_id="ckpt_s3")
def train(
    x: float,
    y: int,
    budget: float | None = None,
    trial_id: str | None = None,
    checkpoint_dir: str | None = None,
) -> dict:
    state_file = Path(checkpoint_dir) / "state.json"
    assert os.environ["MLOPS_CHECKPOINT_DIR"] == checkpoint_dir
    done = json.loads(state_file.read_text())["steps"] if state_file.exists() else 0
    executed = int(budget) - done
    state_file.write_text(json.dumps({"steps": int(budget)}))
    counts = Path(RESULTS, "counts")
    counts.mkdir(parents=True, exist_ok=True)
    with open(counts / f"{trial_id}.txt", "a") as out:
        out.write(f"{int(budget)} {executed}\n")
    return {"loss": (x - 0.3) ** 2 + ((y - 7) / 10) ** 2 + 0.5 / budget}


CONTAINER_TRIAL = """
import json, os, pathlib
budget = int(float(os.environ["MLOPS_BUDGET"]))
trial = json.loads(os.environ["MLOPS_TRIAL"])
state = pathlib.Path(os.environ["MLOPS_CHECKPOINT_DIR"]) / "state.json"
done = json.loads(state.read_text())["steps"] if state.exists() else 0
state.write_text(json.dumps({"steps": budget}))
with open(f"/counts/{trial['trial_id']}.txt", "a") as out:
    out.write(f"{budget} {budget - done}\\n")
h = trial["hparams"]
pathlib.Path(os.environ["MLOPS_RESULT_FILE"]).write_text(json.dumps({"loss": (h["x"] - 0.3) ** 2 + 0.5 / budget}))
"""


@task
def report(result: dict) -> None:
    context = get_current_context()
    out = {"summary": result, "run_id": context["run_id"]}
    Path(RESULTS, f"{context['dag'].dag_id}.json").write_text(json.dumps(out, default=str))


def _dag(dag_id: str, n_trials: int):
    return dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(search_space=SPACE, metric="loss", mode="min", seed=5, n_trials=n_trials),
    )


@_dag("ckpt_halving_python", 9)
def ckpt_halving_python():
    report(
        halving_sweep(
            train, halving(min_budget=1, max_budget=9, eta=3), n_trials=9, delete_checkpoints="losers"
        )
    )


def _docker_trials(batches):
    from docker.types import Mount

    counts = str(Path(RESULTS, "counts"))
    Path(counts).mkdir(parents=True, exist_ok=True)
    os.chmod(counts, 0o777)
    return container_trials(
        task_id="train",
        batches=batches,
        runtime="docker",
        image=IMAGE,
        command=["python3", "-c", CONTAINER_TRIAL],
        checkpoint=URI,
        checkpoint_conn_id="ckpt_s3",
        docker_kwargs={
            "mounts": [Mount(target="/counts", source=counts, type="bind")],
            "mount_tmp_dir": False,
        },
    )


@_dag("ckpt_halving_docker", 4)
def ckpt_halving_docker():
    report(
        halving_sweep(
            _docker_trials,
            halving(min_budget=1, max_budget=4, eta=2),
            n_trials=4,
            delete_checkpoints="losers",
            checkpoint=URI,
            checkpoint_conn_id="ckpt_s3",
        )
    )


ckpt_halving_python()
ckpt_halving_docker()
