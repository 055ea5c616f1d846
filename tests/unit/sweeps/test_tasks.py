from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_mlops_provider.sweeps import plan_trials, trial_task, trials_from_grid


def test_plan_trials_grid_and_random():
    space = {"a": [1, 2, 3], "b": {"low": 0.0, "high": 1.0, "num": 2}}
    grid = plan_trials(space, max_parallel_tasks=4)
    assert sum(len(b["trials"]) for b in grid) == 6
    assert len(grid) == 4
    rnd = plan_trials(space, n_trials=3, seed=5, gpus_per_trial=1)
    assert [len(b["trials"]) for b in rnd] == [1, 1, 1]
    assert all(b["trials"][0]["resources"] == {"gpus": 1} for b in rnd)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "bayes"}, "strategy must be one of ['grid', 'random'], got 'bayes'"),
        ({"strategy": "random"}, "n_trials must be given for a random sweep, got None"),
        ({"n_trials": 0}, "n must be an integer >= 1, got 0"),
        ({"gpus_per_trial": -1}, "gpus must be an integer >= 0, got -1"),
    ],
    ids=["unknown-strategy", "random-without-n", "n-zero", "negative-gpus"],
)
def test_plan_trials_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        plan_trials({"a": [1, 2]}, **kwargs)
    assert str(err.value) == message


def test_trial_task_keeps_the_function_name_and_runs_inline_batches():
    @trial_task
    def train(x):
        return {"loss": x}

    assert train.function.__name__ == "train"
    trials = trials_from_grid({"x": [1, 2]})
    records = train.function(trials=trials)
    assert [r["metrics"]["loss"] for r in records] == [1, 2]
    # one trial, as expand_kwargs(trials_from_grid(...)) passes it
    one = train.function(**trials[0])
    assert len(one) == 1
    seconds = one[0].pop("seconds")
    assert isinstance(seconds, float)
    assert seconds >= 0
    # untracked (no plan_sweep reference): not cached, no MLflow run
    assert one == [
        {**trials[0], "status": "success", "metrics": {"loss": 1}, "cached": False, "mlflow_run_id": None}
    ]


def test_importing_sweeps_and_params_stays_light():
    code = (
        "import sys, airflow_mlops_provider.sweeps, airflow_mlops_provider.params;"
        "heavy = {'mlflow','feast','pandas','pyarrow','numpy','docker','kubernetes','sklearn'};"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
