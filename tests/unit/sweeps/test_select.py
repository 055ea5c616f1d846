from __future__ import annotations

import math

import pytest

from airflow_mlops_provider.exceptions import SweepError
from airflow_mlops_provider.sweeps import make_trial, run_trial, run_trials, select_best


def _record(i, loss=None, error=None):
    trial = make_trial({"i": i})
    if error:
        return {**trial, "status": "failed", "error": error}
    return {**trial, "status": "success", "metrics": {"loss": loss, "acc": 1 - loss}}


def test_min_mode_picks_lowest_and_sorts_leaderboard():
    results = [[_record(0, 0.5), _record(1, 0.2)], [_record(2, 0.9)]]
    out = select_best(results, metric="loss", mode="min")
    assert out["best"]["hparams"] == {"i": 1}
    assert [r["hparams"]["i"] for r in out["leaderboard"]] == [1, 0, 2]
    assert [r["rank"] for r in out["leaderboard"]] == [1, 2, 3]
    assert (out["n_trials"], out["n_succeeded"], out["n_failed"]) == (3, 3, 0)


def test_max_mode_picks_highest():
    out = select_best([_record(0, 0.5), _record(1, 0.2)], metric="acc", mode="max")
    assert out["best"]["hparams"] == {"i": 1}


def test_failed_trials_tolerated_when_ratio_met_and_listed_last():
    results = [_record(0, 0.4), _record(1, error="RuntimeError: boom"), _record(2, 0.3), _record(3, math.nan)]
    out = select_best(results, metric="loss", min_success_ratio=0.5)
    assert out["best"]["hparams"] == {"i": 2}
    assert [r["status"] for r in out["leaderboard"]] == ["success", "success", "failed", "failed"]
    assert out["leaderboard"][-1]["rank"] is None
    assert out["n_failed"] == 2
    nan_record = next(r for r in out["leaderboard"] if r["hparams"] == {"i": 3})
    assert nan_record["error"] == "metric 'loss' is not a number: nan"


def test_too_many_failures_is_a_sweep_error():
    results = [_record(0, 0.4)] + [_record(i, error="RuntimeError: boom") for i in range(1, 4)]
    with pytest.raises(SweepError) as err:
        select_best(results, metric="loss", min_success_ratio=0.5)
    assert str(err.value).startswith(
        "only 1 of 4 trials succeeded (25%), below min_success_ratio=0.5; first failures: "
    )
    assert "RuntimeError: boom" in str(err.value)


def test_missing_planned_trials_count_as_failed():
    planned = [{"trials": [make_trial({"i": 0}), make_trial({"i": 1})]}]
    out = select_best([[_record(0, 0.1)]], metric="loss", min_success_ratio=0.5, expected_trials=planned)
    assert out["n_trials"] == 2
    assert out["leaderboard"][1]["error"] == "no result: its task did not finish"


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        (
            {"metric": "loss", "mode": "median"},
            ValueError,
            "mode must be one of ['min', 'max'], got 'median'",
        ),
        ({"metric": ""}, ValueError, "metric must be a non-empty string, got ''"),
        (
            {"metric": "loss", "min_success_ratio": 1.5},
            ValueError,
            "min_success_ratio must be a number between 0 and 1, got 1.5",
        ),
        (
            {"metric": "f1"},
            ValueError,
            "metric 'f1' is missing from the results of 2 trial(s) (e.g. '7c4e9b8b8eb2b811'); the trials report ['acc', 'loss']",
        ),
    ],
    ids=["unknown-mode", "empty-metric", "ratio-out-of-range", "metric-missing"],
)
def test_bad_select_arguments(kwargs, exc, message):
    with pytest.raises(exc) as err:
        select_best([_record(0, 0.1), _record(1, 0.2)], **kwargs)
    assert str(err.value) == message


def test_no_results_at_all():
    with pytest.raises(SweepError, match="the sweep has no trial results to select from"):
        select_best([], metric="loss")


def test_run_trial_passes_params_and_optional_extras():
    seen = {}

    def train(lr, depth, trial_id, resources):
        seen.update(lr=lr, depth=depth, trial_id=trial_id, resources=resources)
        return {"loss": lr * depth}

    trial = make_trial({"lr": 0.5, "depth": 2}, {"gpus": 1})
    record = run_trial(train, trial)
    assert record == {**trial, "status": "success", "metrics": {"loss": 1.0}}
    assert seen == {"lr": 0.5, "depth": 2, "trial_id": trial["trial_id"], "resources": {"gpus": 1}}


def test_run_trials_records_exceptions_and_bad_returns_without_stopping():
    def train(x):
        if x == 1:
            raise RuntimeError("diverged")
        if x == 2:
            return 0.3
        return {"loss": x}

    records = run_trials(train, [make_trial({"x": i}) for i in range(4)])
    assert [r["status"] for r in records] == ["success", "failed", "failed", "success"]
    assert records[1]["error"] == "RuntimeError: diverged"
    assert records[2]["error"] == "train returned float 0.3; a trial must return a dict of metrics"
