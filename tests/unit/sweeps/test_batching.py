from __future__ import annotations

import pytest

from airflow_mlops_provider.sweeps import batch_trials, flatten_results, live_max_map_length, make_trial


def _trials(n):
    return [make_trial({"i": i}) for i in range(n)]


def test_one_trial_per_batch_below_the_limit():
    batches = batch_trials(_trials(5), max_map_length=1024)
    assert [len(b["trials"]) for b in batches] == [1] * 5


def test_10000_trials_fit_in_max_map_length_batches_of_even_size():
    trials = _trials(10_000)
    batches = batch_trials(trials, max_map_length=1024)
    assert len(batches) == 1024
    sizes = {len(b["trials"]) for b in batches}
    assert sizes == {9, 10}
    assert [t for b in batches for t in b["trials"]] == trials


def test_max_parallel_tasks_caps_the_batch_count():
    batches = batch_trials(_trials(100), max_parallel_tasks=8, max_map_length=1024)
    assert len(batches) == 8
    assert sorted(len(b["trials"]) for b in batches) == [12] * 4 + [13] * 4


def test_live_setting_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    assert live_max_map_length() == 3
    assert len(batch_trials(_trials(10))) == 3
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "7")
    assert len(batch_trials(_trials(10))) == 7


@pytest.mark.parametrize(
    ("trials", "kwargs", "message"),
    [
        ([], {}, "trials must not be empty, got []"),
        ({"trial_id": "a"}, {}, "trials must be a list of trial dicts, got {'trial_id': 'a'}"),
        ([{"trial_id": "a"}], {"max_parallel_tasks": 0}, "max_parallel_tasks must be an integer >= 1, got 0"),
        (
            [{"trial_id": "a"}],
            {"max_parallel_tasks": "4"},
            "max_parallel_tasks must be an integer >= 1, got '4'",
        ),
        ([{"trial_id": "a"}], {"max_map_length": -1}, "max_map_length must be an integer >= 1, got -1"),
    ],
    ids=["empty", "mapping", "zero-parallel", "str-parallel", "negative-map-length"],
)
def test_bad_batching_arguments(trials, kwargs, message):
    with pytest.raises(ValueError) as err:
        batch_trials(trials, **kwargs)
    assert str(err.value) == message


def test_flatten_results_joins_batches_and_skips_none():
    assert flatten_results([[{"a": 1}, {"a": 2}], None, [{"a": 3}], {"a": 4}]) == [
        {"a": 1},
        {"a": 2},
        {"a": 3},
        {"a": 4},
    ]


def test_flatten_results_rejects_non_records():
    with pytest.raises(ValueError) as err:
        flatten_results([[1]])
    assert str(err.value) == "results must hold trial records (dicts), got 1"
