from __future__ import annotations

import logging
import math

import pytest

from airflow_mlops_provider.sweeps.records import TrialFailure, TrialResultError, split_result
from airflow_mlops_provider.sweeps.runner import python_trial_runner, run_batch
from airflow_mlops_provider.sweeps.space import trials_from_grid

log = logging.getLogger("test")


def test_split_result_keeps_numbers_as_metrics_and_outputs_apart():
    metrics, outputs = split_result({"auc": 0.8, "epochs": 3, "outputs": {"model": "/m.joblib"}})
    assert metrics == {"auc": 0.8, "epochs": 3}
    assert outputs == {"model": "/m.joblib"}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([1, 2], "returned list [1, 2]; expected a JSON object of numbers"),
        ({"auc": "0.8"}, "returned 'auc' = '0.8'; expected a JSON object of numbers"),
        ({"auc": True}, "returned 'auc' = True"),
        ({"auc": math.nan}, "returned 'auc' = nan"),
        ({"auc": math.inf}, "returned 'auc' = inf"),
        ({"outputs": {"a": 1}}, "returned no metric"),
        ({"auc": 1, "outputs": [1]}, "returned 'outputs' = [1]; expected a JSON object"),
        ({}, "returned no metric"),
        (None, "returned NoneType None"),
    ],
)
def test_split_result_names_the_bad_value(result, message):
    with pytest.raises(TrialResultError, match="^trial x " + message.replace("[", r"\[").replace("]", r"\]")):
        split_result(result, source="trial x")


def test_python_trials_fail_one_by_one_with_their_reason():
    def train(x, trial_id, mlflow_run_id):
        assert mlflow_run_id is None
        if x == 2:
            raise RuntimeError("boom")
        if x == 3:
            return {"loss": "bad"}
        return {"loss": x, "outputs": {"id": trial_id}}

    trials = trials_from_grid({"x": [1, 2, 3]})
    records = run_batch(python_trial_runner(train), trials=trials, context=None, log=log)
    assert [r["status"] for r in records] == ["success", "failed", "failed"]
    assert records[0]["metrics"] == {"loss": 1}
    assert records[0]["outputs"] == {"id": trials[0]["trial_id"]}
    assert records[1]["error"] == "RuntimeError: boom"
    assert records[1]["failure"] == "trial"
    assert records[1]["tail"][-1] == "RuntimeError: boom"
    assert "returned 'loss' = 'bad'" in records[2]["error"]
    assert all(r["cached"] is False and r["mlflow_run_id"] is None for r in records)


def test_trial_failure_carries_tail_and_cacheability():
    def run_one(trial, env):
        raise TrialFailure("engine went away", tail=["a", "b"], cacheable=False)

    (record,) = run_batch(run_one, trials=trials_from_grid({"x": [1]}), context=None, log=log)
    assert record["status"] == "failed"
    assert record["error"] == "engine went away"
    assert record["tail"] == ["a", "b"]
    assert record["failure"] == "infra"


def test_progress_lines_count_failures_best_and_time_left(caplog):
    def train(x):
        if x == 2:
            raise ValueError("no")
        return {"loss": 10 - x}

    ref = {"index": 1, "n_batches": 3, "total": 9, "metric": "loss", "mode": "min"}
    with caplog.at_level(logging.INFO, logger="test"):
        run_batch(
            python_trial_runner(train),
            trials=trials_from_grid({"x": [1, 2, 3]}),
            context=None,
            log=log,
            ref=ref,
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Progress:")]
    assert len(lines) == 3
    assert lines[0].startswith(
        "Progress: batch 2/3: 1/3 trials done (0 failed, 0 cached); best so far loss=9"
    )
    assert "left in this batch" in lines[0]
    assert lines[1].startswith(
        "Progress: batch 2/3: 2/3 trials done (1 failed, 0 cached); best so far loss=9"
    )
    assert lines[2].startswith(
        "Progress: batch 2/3: 3/3 trials done (1 failed, 0 cached); best so far loss=7"
    )
    assert "batch finished in" in lines[2]


def test_a_trial_parameter_named_like_an_extra_argument_is_a_configuration_error():
    from airflow.sdk.exceptions import AirflowFailException

    def train(trial_id, **params):
        return {"loss": 1}

    with pytest.raises(AirflowFailException, match="trial parameter 'trial_id' clashes"):
        run_batch(
            python_trial_runner(train),
            trials=[{"trial_id": "t", "hparams": {"trial_id": 1}}],
            context=None,
            log=log,
        )
