"""Sweeps run for real through `airflow dags test`: plan_sweep -> mapped trial task -> select_best_trial."""

from __future__ import annotations

import re

import pytest

from airflow_mlops_provider.sweeps import trials_from_grid, trials_from_random

pytestmark = pytest.mark.integration

MIXED_SPACE = {
    "lr": {"distribution": "float", "low": 0.001, "high": 0.1, "log": True, "num": 3},
    "depth": {"distribution": "int", "low": 1, "high": 2},
    "optimizer": ["adam", "sgd"],
    "fail": [False, True],
}


def _loss(params):
    numbers = [v for v in params.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(abs(v) for v in numbers) + (0.5 if params.get("optimizer") == "sgd" else 0.0)


def test_grid_of_mixed_types_with_log_range_and_failing_trials(run_sweep):
    """Grid product, stable ids, log spacing, live max_map_length, failures tolerated at ratio 0.5."""
    run = run_sweep(
        "sweep_grid",
        {"search_space": MIXED_SPACE, "min_success_ratio": 0.5},
        AIRFLOW__CORE__MAX_MAP_LENGTH="5",
    )
    assert run.state == "success", run.tail()
    report = run.report
    expected = trials_from_grid(MIXED_SPACE)
    # the run planned exactly the local grid, with the same ids: ids are stable across processes
    assert report["planned"] == expected
    assert len(expected) == 3 * 2 * 2 * 2
    assert sorted({t["hparams"]["lr"] for t in expected}) == [0.001, 0.01, 0.1]
    # the live [core] max_map_length (5 here) capped the number of mapped tasks
    assert report["n_batches"] == 5
    summary = report["summary"]
    assert (summary["n_trials"], summary["n_succeeded"], summary["n_failed"]) == (24, 12, 12)
    ok = [t for t in expected if not t["hparams"]["fail"]]
    best = min(ok, key=lambda t: (_loss(t["hparams"]), t["trial_id"]))
    assert summary["best"]["trial_id"] == best["trial_id"]
    assert summary["best"]["hparams"] == {"lr": 0.001, "depth": 1, "optimizer": "adam", "fail": False}
    board = summary["leaderboard"]
    losses = [r["metrics"]["loss"] for r in board if r["status"] == "success"]
    assert losses == sorted(losses)
    assert [r["status"] for r in board[12:]] == ["failed"] * 12
    assert all(r["error"].startswith("RuntimeError: injected failure") for r in board[12:])
    # progress a person can follow: per trial, the batch's counts, the best so far, the time left
    assert re.search(
        r"Progress: batch \d/5: \d/\d trials done \(\d failed, 0 cached\); best so far loss=", run.output
    )
    assert "left in this batch" in run.output


def test_too_many_failing_trials_fail_the_sweep_clearly(run_sweep):
    run = run_sweep("sweep_grid", {"search_space": MIXED_SPACE, "min_success_ratio": 0.6})
    assert run.state == "failed", run.tail()
    assert "only 12 of 24 trials succeeded (50%), below min_success_ratio=0.6; first failures: " in run.output
    assert run.report is None


def test_random_sweep_is_reproducible_from_its_seed(run_sweep):
    space = {
        "x": {"low": -1.0, "high": 1.0},
        "n": {"low": 1, "high": 1000, "log": True},
        "act": ["relu", "tanh"],
    }
    run = run_sweep("sweep_random", {"search_space": space, "seed": 11, "n_trials": 9})
    assert run.state == "success", run.tail()
    # the same seed gives the same trials here as in the run (another process)
    assert run.report["planned"] == trials_from_random(space, 9, 11)
    assert run.report["planned"] != trials_from_random(space, 9, 12)
    assert run.report["summary"]["n_trials"] == 9


def test_trials_feed_expand_kwargs_directly_with_per_trial_resources(run_sweep):
    run = run_sweep("sweep_plain")
    assert run.state == "success", run.tail()
    summary = run.report["summary"]
    assert summary["n_trials"] == 4
    assert {r["trial_id"] for r in summary["leaderboard"]} == {t["trial_id"] for t in run.report["planned"]}
    # each mapped task got its own trial's resources
    by_gpus = {r["metrics"]["gpus"] for r in summary["leaderboard"]}
    assert by_gpus == {0, 2}
    assert summary["best"]["hparams"] == {"x": 1}


SPACE_FOR_BAD_INPUT = {"x": [1, 2]}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"search_space": {}}, "{} should be non-empty"),
        (
            {"search_space": {"lr": {"low": 1.0, "high": 0.1}}},
            "search_space['lr']: low must be <= high, got low=1.0, high=0.1",
        ),
        ({"metric": "accuracy"}, "metric 'accuracy' is missing from the results of 18 trial(s)"),
        ({"cache_key": "{{ '' }}"}, "cache_key rendered empty from \"{{ '' }}\""),
        (
            {"search_space": {"x": [1, 2, 3]}, "strategy": "random", "n_trials": 5},
            "n=5 is more than the 3 distinct points of search_space",
        ),
        (
            {"search_space": {**SPACE_FOR_BAD_INPUT, "resources": [{"gpus": 1}, {"memory": "lots"}]}},
            "'lots'",
        ),
    ],
    ids=[
        "empty-space",
        "low-gt-high",
        "metric-missing",
        "empty-cache-key",
        "n-trials-over-space",
        "bad-resources",
    ],
)
def test_bad_sweep_input_fails_with_a_clear_message(run_sweep, conf, message):
    run = run_sweep("sweep_grid", conf)
    assert message in run.output, run.tail()
    assert run.state in (None, "failed")
    assert run.report is None


@pytest.mark.slow
def test_10000_trials_complete_with_default_max_map_length(run_sweep):
    """10,000 trials pass through 16 mapped tasks; [core] max_map_length stays at its default."""
    run = run_sweep("sweep_10k", {"max_parallel_tasks": 16}, AIRFLOW__CORE__MAX_MAP_LENGTH="1024")
    assert run.state == "success", run.tail()
    summary = run.report["summary"]
    assert run.report["n_batches"] == 16
    assert (summary["n_trials"], summary["n_succeeded"]) == (10_000, 10_000)
    assert len({r["trial_id"] for r in summary["leaderboard"]}) == 10_000
    planned = run.report["planned"]
    best = min(planned, key=lambda t: (_loss(t["hparams"]), t["trial_id"]))
    assert summary["best"]["trial_id"] == best["trial_id"]
