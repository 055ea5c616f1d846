from __future__ import annotations

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from airflow_mlops_provider.params import (
    gpus_per_trial_param,
    metric_param,
    mode_param,
    n_trials_param,
    runtime_param,
    search_space_param,
    sweep_params,
)

SPACE = {"lr": {"distribution": "float", "low": 0.001, "high": 0.1, "log": True}, "depth": [2, 4]}


def test_sweep_params_defaults_validate():
    params = ParamsDict(sweep_params(search_space=SPACE))
    assert params.validate() == {
        "search_space": SPACE,
        "strategy": "random",
        "n_trials": 20,
        "seed": 0,
        "runtime": "local",
        "gpus_per_trial": 0,
        "metric": "loss",
        "mode": "min",
        "min_success_ratio": 0.5,
        "max_parallel_tasks": None,
        "cache": "readwrite",
        "cache_key": None,
    }


def test_form_fields_are_typed_with_ranges():
    params = sweep_params(search_space=SPACE, max_trials=500, max_gpus_per_trial=4)
    assert params["n_trials"].schema == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "title": "Number of trials",
    }
    assert params["gpus_per_trial"].schema["maximum"] == 4
    assert params["runtime"].schema["enum"] == ["docker", "kubernetes", "local"]
    assert params["mode"].schema["enum"] == ["min", "max"]
    assert params["search_space"].schema["type"] == "object"


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (n_trials_param(), 0, "0 is less than the minimum of 1"),
        (n_trials_param(), 20_000, "20000 is greater than the maximum of 10000"),
        (n_trials_param(), "ten", "'ten' is not of type 'integer'"),
        (runtime_param(), "slurm", "'slurm' is not one of ['docker', 'kubernetes', 'local']"),
        (gpus_per_trial_param(), -1, "-1 is less than the minimum of 0"),
        (gpus_per_trial_param(maximum=2), 3, "3 is greater than the maximum of 2"),
        (mode_param(), "median", "'median' is not one of ['min', 'max']"),
        (metric_param(), "", "'' should be non-empty"),
        (search_space_param(SPACE), {}, "{} should be non-empty"),
        (
            search_space_param(SPACE),
            {"lr": {"distribution": "gaussian", "low": 0, "high": 1}},
            "'gaussian' is not one of ['choice', 'float', 'int']",
        ),
        (
            search_space_param(SPACE),
            {"lr": {"distribution": "float", "low": 0, "high": 1, "log": True}},
            "0 is less than or equal to the minimum of 0",
        ),
        (search_space_param(SPACE), {"lr": {"distribution": "choice"}}, "'values' is a required property"),
        (
            search_space_param(SPACE),
            {"lr": {"distribution": "int", "low": 1}},
            "'high' is a required property",
        ),
        (search_space_param(SPACE), {"lr": []}, "[] should be non-empty"),
        (
            search_space_param(SPACE),
            {"lr": {"low": 1, "high": 2, "sigma": 1}},
            "Additional properties are not allowed ('sigma' was unexpected)",
        ),
        (search_space_param(SPACE), [1, 2], "[1, 2] is not of type 'object'"),
    ],
    ids=[
        "n-trials-zero",
        "n-trials-over-max",
        "n-trials-str",
        "runtime-unknown",
        "gpus-negative",
        "gpus-over-max",
        "mode-unknown",
        "metric-empty",
        "space-empty",
        "space-unknown-distribution",
        "space-log-low-zero",
        "space-choice-without-values",
        "space-range-without-high",
        "space-empty-list",
        "space-unknown-key",
        "space-not-object",
    ],
)
def test_schema_rejects_bad_values_with_its_message(param, value, message):
    with pytest.raises(ParamValidationError) as err:
        param.resolve(value)
    assert str(err.value).splitlines()[0] == message


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: n_trials_param(0), "n_trials must be an integer between 1 and 10000, got 0"),
        (lambda: n_trials_param(5, minimum=0), "minimum must be an integer >= 1, got 0"),
        (lambda: gpus_per_trial_param(9), "gpus_per_trial must be an integer between 0 and 8, got 9"),
        (
            lambda: runtime_param("slurm"),
            "runtime must be one of ['docker', 'kubernetes', 'local'], got 'slurm'",
        ),
        (
            lambda: runtime_param(allowed=["docker", "slurm"]),
            "allowed must be a non-empty subset of ['docker', 'kubernetes', 'local'], got ['docker', 'slurm']",
        ),
        (lambda: mode_param("best"), "mode must be one of ['min', 'max'], got 'best'"),
        (lambda: metric_param(" "), "metric must be a non-empty string, got ' '"),
        (lambda: search_space_param({}), "search_space must define at least one parameter, got {}"),
        (
            lambda: sweep_params(search_space=SPACE, min_success_ratio=2),
            "min_success_ratio must be a number between 0 and 1, got 2",
        ),
        # regressions found by tests/chaos/test_bad_inputs.py (TypeError before)
        (lambda: n_trials_param(5, maximum="10"), "n_trials maximum must be an integer >= 1, got '10'"),
        (
            lambda: sweep_params(search_space=SPACE, rounds="3", trials_per_round=4),
            "rounds must be an integer >= 1, got '3'",
        ),
        (
            lambda: runtime_param(allowed=[["docker"]]),
            "allowed must be a non-empty subset of ['docker', 'kubernetes', 'local'], got [['docker']]",
        ),
        (
            lambda: runtime_param(allowed=5),
            "allowed must be a non-empty subset of ['docker', 'kubernetes', 'local'], got 5",
        ),
        # regression: accepted, then the form refused its own default on every run
        (
            lambda: metric_param("val loss"),
            "metric must be a name without whitespace (pattern ^\\S+$), got 'val loss'",
        ),
    ],
    ids=[
        "n-trials-default",
        "n-trials-minimum",
        "gpus-default",
        "runtime-default",
        "runtime-allowed",
        "mode-default",
        "metric-default",
        "space-default",
        "ratio-default",
        "n-trials-maximum-str",
        "rounds-str",
        "runtime-allowed-unhashable",
        "runtime-allowed-int",
        "metric-with-space",
    ],
)
def test_bad_defaults_fail_at_parse_time(factory, message):
    with pytest.raises(ValueError) as err:
        factory()
    assert str(err.value) == message


def test_cache_params_reject_bad_values():
    params = ParamsDict(sweep_params(search_space=SPACE))
    params["cache"] = "off"
    params["cache_key"] = "{{ data_interval_start }}-v2"
    assert params.validate()["cache"] == "off"
    for key, value in (("cache", "sometimes"), ("cache_key", "")):
        params = ParamsDict(sweep_params(search_space=SPACE))
        with pytest.raises(ParamValidationError, match=key):
            params[key] = value  # a ParamsDict validates on assignment
    with pytest.raises(ValueError, match="cache must be one of"):
        sweep_params(search_space=SPACE, cache="sometimes")
    with pytest.raises(ValueError, match="cache_key must be None or a non-empty string, got ''"):
        sweep_params(search_space=SPACE, cache_key="")


def test_search_space_param_takes_the_json_text_parse_search_space_takes():
    # regression: parse_search_space accepted the text, then dict(text) raised an unclear ValueError
    param = search_space_param('{"lr": [0.1, 0.01]}')
    assert ParamsDict({"search_space": param}).validate() == {"search_space": {"lr": [0.1, 0.01]}}
