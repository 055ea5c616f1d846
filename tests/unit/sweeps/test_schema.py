"""One JSON Schema for search spaces: the trigger form's Param and the planner apply the same rules."""

from __future__ import annotations

import json

import jsonschema
import pytest
from airflow.sdk.exceptions import ParamValidationError

from airflow_mlops_provider.params import SEARCH_SPACE_SCHEMA as PARAMS_SCHEMA
from airflow_mlops_provider.params import search_space_param
from airflow_mlops_provider.sweeps import parse_search_space, trials_from_grid
from airflow_mlops_provider.sweeps.schema import SEARCH_SPACE_SCHEMA, check_search_space

FORM = search_space_param({"a": [1]})


def _form_error(space):
    """The first line of the message Airflow answers a trigger with, or None when it accepts it."""
    try:
        FORM.resolve(json.loads(json.dumps(space)))  # what the REST API hands Airflow: JSON
    except ParamValidationError as err:
        return str(err).splitlines()[0]
    return None


def test_the_schema_is_a_valid_json_schema_without_our_annotations():
    jsonschema.Draft202012Validator.check_schema(SEARCH_SPACE_SCHEMA)
    assert "x-error" not in json.dumps(SEARCH_SPACE_SCHEMA)
    assert PARAMS_SCHEMA is SEARCH_SPACE_SCHEMA
    assert FORM.schema["additionalProperties"] == SEARCH_SPACE_SCHEMA["additionalProperties"]


# Each bad space is refused by the trigger form (jsonschema's message) and by the planner (ours).
BOTH_REFUSE = [
    ({"x": {"low": 0.0, "high": 1.0, "num": 3, "step": 0.1}},
     "{'low': 0.0, 'high': 1.0, 'num': 3, 'step': 0.1} should not be valid under {'required': ['num', 'step']}",
     "search_space['x']: give 'num' or 'step', not both, got num=3, step=0.1"),
    ({"x": {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}},
     "{'low': 0.1, 'high': 1.0, 'log': True, 'step': 0.1} should not be valid under {'required': ['step']}",
     "search_space['x']: step cannot be combined with log=true, got step=0.1"),
    ({"x": {"distribution": "choice", "values": [1], "low": 0}},
     "'low' should not be valid under {'enum': ['low', 'high', 'step', 'num', 'log']}",
     "search_space['x']: a choice takes only 'values', got also ['low']"),
    ({"x": {"distribution": "int", "values": [1], "low": 0, "high": 1}},
     "'values' should not be valid under {'const': 'values'}",
     "search_space['x']: 'values' belongs to a choice, not to a int range"),
    ({"x": {"high": 1.0}}, "'low' is a required property", "search_space['x']: low must be a finite number, got None"),
    ({"x": {"distribution": "int", "low": 1}}, "'high' is a required property",
     "search_space['x']: high must be an integer, got None"),
    ({"x": {"low": True, "high": 1.0}}, "True is not of type 'number'",
     "search_space['x']: low must be a finite number, got True"),
    ({"x": {"low": 0.0, "high": 1.0, "num": 2.5}}, "2.5 is not of type 'integer'",
     "search_space['x']: num must be an integer >= 1, got 2.5"),
    ({"x": {"low": 0.0, "high": 1.0, "step": -0.5}}, "-0.5 is less than or equal to the minimum of 0",
     "search_space['x']: step must be a number > 0, got -0.5"),
    ({"x": {"values": "abc"}}, "'abc' is not of type 'array'",
     "search_space['x']: a choice needs a non-empty list of 'values', got 'abc'"),
    ({"": [1]}, "'' should be non-empty", "search_space parameter names must be non-empty strings, got ''"),
    ({"resources": 5}, "5 is not of type 'object', 'array'",
     "search_space['resources'] must be a resources dict or a list of them, got 5"),
    ({"resources": []}, "[] should be non-empty",
     "search_space['resources']: a choice needs a non-empty list of 'values', got []"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("space", "form_message", "plan_message"),
    BOTH_REFUSE,
    ids=[
        "num-and-step",
        "log-and-step",
        "choice-with-range-key",
        "range-with-values",
        "float-without-low",
        "int-without-high",
        "bool-bound",
        "float-num",
        "negative-step",
        "values-not-a-list",
        "empty-name",
        "resources-constant",
        "resources-empty-list",
    ],
)
def test_form_and_planner_refuse_the_same_spaces(space, form_message, plan_message):
    assert _form_error(space) == form_message
    with pytest.raises(ValueError) as err:
        parse_search_space(space)
    assert str(err.value) == plan_message


# What JSON Schema cannot say is checked when the sweep is planned (the form accepts it).
PLANNER_ONLY = [
    ({"x": {"low": 1.0, "high": 0.5}}, "search_space['x']: low must be <= high, got low=1.0, high=0.5"),
    # integer bounds make an int range, whose step must be an integer; JSON Schema cannot tell 0 from 0.0
    ({"x": {"low": 0, "high": 4, "step": 0.5}}, "search_space['x']: step must be an integer >= 1, got 0.5"),
    (
        {"x": {"distribution": "int", "low": 1.0, "high": 3}},
        "search_space['x']: low must be an integer, got 1.0",
    ),
    (
        {"resources": {"gpu": 1}},
        "search_space['resources']: resources has unknown field(s) ['gpu']; "
        "expected some of ['cpus', 'memory', 'gpus', 'gpu_type', 'gpu_vendor', 'shm_size']",
    ),
]


@pytest.mark.parametrize(
    ("space", "plan_message"),
    PLANNER_ONLY,
    ids=["low-gt-high", "int-float-step", "int-float-bound", "resources-field"],
)
def test_what_json_schema_cannot_say_is_checked_when_planning(space, plan_message):
    assert _form_error(space) is None
    with pytest.raises(ValueError) as err:
        parse_search_space(space)
    assert str(err.value) == plan_message


@pytest.mark.parametrize(
    "space",
    [
        {"lr": {"distribution": "float", "low": 1e-4, "high": 1e-1, "log": True, "num": 4}},
        {"depth": {"low": 2, "high": 8, "step": 2}, "act": ["relu", "gelu"], "dropout": 0.1},
        {"x": {"values": [1, 2]}, "y": {"distribution": "choice", "values": [None]}, "z": None},
        {"resources": [{"gpus": 1}, {"gpus": 2, "memory": "8Gi"}]},
        {"resources": {"values": [{"gpus": 1}]}},
        {"a": [1], "resources": {"gpus": 1, "gpu_type": "NVIDIA-A100"}},
    ],
    ids=[
        "log-float",
        "int-choice-constant",
        "choice-forms",
        "resources-list",
        "resources-choice",
        "resources-dict",
    ],
)
def test_form_and_planner_accept_the_same_spaces(space):
    assert _form_error(space) is None
    assert parse_search_space(space)


def test_a_single_resources_dict_is_every_trials_resources():
    """The documented form ``"resources": {...}`` (before, only a list of dicts was accepted)."""
    trials = trials_from_grid({"a": [1, 2], "resources": {"gpus": 1, "memory": "1Gi"}})
    assert [t["resources"] for t in trials] == [{"gpus": 1, "memory": 1024**3}] * 2


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"x": {"low": float("nan"), "high": 1.0}},
            "search_space['x']: low must be a finite number, got nan",
        ),
        ({"x": ()}, "search_space['x']: a choice needs a non-empty list of 'values', got ()"),
        ({1: [1]}, "search_space parameter names must be non-empty strings, got 1"),
    ],
    ids=["nan-bound", "empty-tuple", "int-name"],
)
def test_python_values_the_form_never_sees(space, message):
    with pytest.raises(ValueError) as err:
        parse_search_space(space)
    assert str(err.value) == message


def test_check_fills_in_the_inferred_distribution_and_keeps_the_input():
    space = {"n": {"low": 1, "high": 3}, "x": {"low": 0, "high": 1.5}, "c": {"values": [1]}, "k": 7}
    assert check_search_space(json.dumps(space)) == {
        "n": {"low": 1, "high": 3, "distribution": "int"},
        "x": {"low": 0, "high": 1.5, "distribution": "float"},
        "c": {"values": [1], "distribution": "choice"},
        "k": 7,
    }
    assert space["n"] == {"low": 1, "high": 3}
