from __future__ import annotations

import json
import math

import pytest

from airflow_mlops_provider.sweeps import (
    make_trial,
    parse_search_space,
    trial_id,
    trials_from_grid,
    trials_from_random,
)

MIXED = {
    "lr": {"distribution": "float", "low": 1e-4, "high": 1e-1, "log": True, "num": 4},
    "depth": {"distribution": "int", "low": 2, "high": 8, "step": 2},
    "optimizer": ["adam", "sgd"],
    "use_bn": [True, False],
    "dropout": 0.1,
}


def test_grid_is_the_full_product_in_space_order():
    trials = trials_from_grid(MIXED)
    assert len(trials) == 4 * 4 * 2 * 2
    assert trials[0]["hparams"] == {
        "lr": 0.0001,
        "depth": 2,
        "optimizer": "adam",
        "use_bn": True,
        "dropout": 0.1,
    }
    assert sorted({t["hparams"]["lr"] for t in trials}) == [0.0001, 0.001, 0.01, 0.1]
    assert sorted({t["hparams"]["depth"] for t in trials}) == [2, 4, 6, 8]
    assert len({t["trial_id"] for t in trials}) == len(trials)
    # shaped for expand_kwargs: only these keys, all JSON-able
    assert all(set(t) == {"trial_id", "hparams"} for t in trials)
    json.dumps(trials)


def test_grid_types_are_kept():
    params = trials_from_grid(MIXED)[0]["hparams"]
    assert isinstance(params["depth"], int)
    assert isinstance(params["lr"], float)
    assert isinstance(params["use_bn"], bool)


def test_float_grid_by_step_and_int_grid_by_num():
    trials = trials_from_grid(
        {"x": {"low": 0.0, "high": 0.3, "step": 0.1}, "n": {"low": 1, "high": 1000, "log": True, "num": 4}}
    )
    assert sorted({t["hparams"]["x"] for t in trials}) == [0.0, 0.1, 0.2, 0.3]
    assert sorted({t["hparams"]["n"] for t in trials}) == [1, 10, 100, 1000]


def test_random_same_seed_same_trials_other_seed_other_trials():
    space = {
        "lr": {"low": 1e-5, "high": 1.0, "log": True},
        "layers": {"low": 1, "high": 6},
        "act": ["relu", "gelu"],
    }
    a = trials_from_random(space, 25, seed=3)
    assert a == trials_from_random(space, 25, seed=3)
    assert a != trials_from_random(space, 25, seed=4)
    assert len({t["trial_id"] for t in a}) == 25


def test_log_range_samples_cover_decades_and_stay_in_bounds():
    trials = trials_from_random({"lr": {"low": 1e-6, "high": 1.0, "log": True}}, 600, seed=0)
    values = [t["hparams"]["lr"] for t in trials]
    assert all(1e-6 <= v <= 1.0 for v in values)
    decades = {math.floor(math.log10(v)) for v in values}
    assert decades >= {-6, -5, -4, -3, -2, -1}
    # log-uniform: about a sixth of the draws per decade, far from the 90% a linear draw puts in the top one
    assert sum(v < 1e-3 for v in values) > 200


def test_int_log_range_is_integer_and_in_bounds():
    values = [
        t["hparams"]["n"]
        for t in trials_from_random({"n": {"low": 1, "high": 1000, "log": True}}, 200, seed=1)
    ]
    assert all(isinstance(v, int) and 1 <= v <= 1000 for v in values)
    assert min(values) < 10


def test_random_respects_float_step():
    values = [
        t["hparams"]["x"]
        for t in trials_from_random({"x": {"low": 0.0, "high": 1.0, "step": 0.25}}, 5, seed=0)
    ]
    assert sorted(values) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_trial_id_is_stable_and_order_independent():
    assert trial_id({"a": 1, "b": "x"}) == trial_id({"b": "x", "a": 1})
    assert trial_id({"a": 1}) != trial_id({"a": 2})
    assert trial_id({"a": 1}) != trial_id({"a": 1}, {"gpus": 1})
    # a known value: ids must not change between releases
    assert trial_id({"lr": 0.01, "depth": 3}) == make_trial({"depth": 3, "lr": 0.01})["trial_id"]
    assert trial_id({"lr": 0.01, "depth": 3}) == "d07ff5cb977cdf9a"


def test_same_params_same_id_across_grid_and_random():
    grid = {t["trial_id"]: t for t in trials_from_grid({"a": [1, 2, 3], "b": ["x", "y"]})}
    for trial in trials_from_random({"a": [1, 2, 3], "b": ["x", "y"]}, 6, seed=9):
        assert grid[trial["trial_id"]]["hparams"] == trial["hparams"]


def test_per_trial_resources_from_the_space():
    trials = trials_from_grid(
        {"lr": [0.1], "resources": [{"gpus": 1}, {"gpus": 2, "memory": "8Gi"}]}, resources={"cpus": 2}
    )
    assert [t["resources"] for t in trials] == [
        {"cpus": 2.0, "gpus": 1},
        {"cpus": 2.0, "gpus": 2, "memory": 8 * 1024**3},
    ]
    assert trials[0]["trial_id"] != trials[1]["trial_id"]
    assert all(t["hparams"] == {"lr": 0.1} for t in trials)


def test_json_text_space_is_accepted():
    assert trials_from_grid(json.dumps({"a": [1, 2]})) == trials_from_grid({"a": [1, 2]})


BAD_SPACES = [
    ({}, "search_space must define at least one parameter, got {}"),
    ("[1, 2]", "search_space must be a mapping of parameter name to values or a range, got '[1, 2]'"),
    ("{not json", "search_space must be a JSON object, got '{not json'"),
    (
        {"lr": {"distribution": "gaussian", "low": 0, "high": 1}},
        "search_space['lr']: unknown distribution 'gaussian'; expected one of ['choice', 'float', 'int']",
    ),
    ({"lr": {"low": 1.0, "high": 0.1}}, "search_space['lr']: low must be <= high, got low=1.0, high=0.1"),
    (
        {"lr": {"low": 0.0, "high": 1.0, "log": True}},
        "search_space['lr']: a log range needs low > 0, got low=0.0",
    ),
    (
        {"lr": {"low": -1, "high": 10, "log": True}},
        "search_space['lr']: a log range needs low > 0, got low=-1",
    ),
    (
        {"n": {"distribution": "int", "low": 0.5, "high": 3}},
        "search_space['n']: low must be an integer, got 0.5",
    ),
    ({"x": {"low": "a", "high": 1.0}}, "search_space['x']: low must be a finite number, got 'a'"),
    ({"x": []}, "search_space['x']: a choice needs a non-empty list of 'values', got []"),
    (
        {"x": {"distribution": "choice"}},
        "search_space['x']: a choice needs a non-empty list of 'values', got None",
    ),
    (
        {"x": {"low": 0, "high": 1, "size": 3}},
        "search_space['x'] has unknown key(s) ['size']; expected some of ['distribution', 'values', 'low', 'high', 'step', 'num', 'log'], got {'low': 0, 'high': 1, 'size': 3}",
    ),
    ({"x": {"low": 0, "high": 4, "step": 0}}, "search_space['x']: step must be an integer >= 1, got 0"),
    ({"x": {"low": 0.0, "high": 4.0, "num": 0}}, "search_space['x']: num must be an integer >= 1, got 0"),
    (
        {"x": {"low": 1.0, "high": 4.0, "log": "yes"}},
        "search_space['x']: log must be true or false, got 'yes'",
    ),
    (
        {"resources": [{"gpus": -1}]},
        "search_space['resources']: gpus must be an integer >= 0, got -1",
    ),
    (
        {"resources": [{"gpu": 1}]},
        "search_space['resources']: resources has unknown field(s) ['gpu']; expected some of ['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size']",
    ),
]


@pytest.mark.parametrize(
    ("space", "message"),
    BAD_SPACES,
    ids=[
        "empty",
        "not-a-mapping",
        "bad-json",
        "unknown-distribution",
        "low-gt-high",
        "log-low-zero",
        "log-low-negative",
        "int-float-bound",
        "non-numeric-bound",
        "empty-choice",
        "choice-without-values",
        "unknown-key",
        "zero-step",
        "zero-num",
        "log-not-bool",
        "bad-resources",
        "unknown-resources-field",
    ],
)
def test_bad_space_messages(space, message):
    with pytest.raises(ValueError) as err:
        parse_search_space(space)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"n": -3}, "n must be an integer >= 1, got -3"),
        ({"n": 2.5}, "n must be an integer >= 1, got 2.5"),
        ({"n": 2, "seed": "x"}, "seed must be an integer, got 'x'"),
        (
            {"n": 7},
            "n=7 is more than the 6 distinct points of search_space; use trials_from_grid to try them all",
        ),
    ],
    ids=["n-zero", "n-negative", "n-float", "seed-str", "n-over-distinct"],
)
def test_bad_random_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        trials_from_random({"a": [1, 2, 3], "b": [True, False]}, **kwargs)
    assert str(err.value) == message


def test_float_grid_without_num_or_step_is_refused():
    with pytest.raises(ValueError) as err:
        trials_from_grid({"lr": {"low": 0.1, "high": 1.0}})
    assert str(err.value) == (
        "search_space['lr']: a float range needs 'num' (or 'step') to be used in a grid, got low=0.1, high=1.0"
    )


def test_oversized_grid_is_refused():
    with pytest.raises(
        ValueError, match=r"a grid of 1000000 trials \{'a': 1000, 'b': 1000\}, more than max_trials=100000"
    ):
        trials_from_grid({"a": {"low": 1, "high": 1000}, "b": {"low": 1, "high": 1000}})
