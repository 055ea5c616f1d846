"""The trigger form of a staged sweep (rounds, trials per round, the samplers) and its leaderboard files."""

from __future__ import annotations

import csv
import io
import json

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from airflow_mlops_provider.params import rounds_param, strategy_param, sweep_params, trials_per_round_param
from airflow_mlops_provider.sweeps import ADAPTIVE_STRATEGIES, STRATEGIES
from airflow_mlops_provider.sweeps.tracking_store import leaderboard_csv, leaderboard_json

SPACE = {"lr": {"distribution": "float", "low": 0.001, "high": 0.1, "log": True}, "depth": [2, 4]}
#: The params of a one-stage sweep, as before staged sweeps.
ONE_STAGE_KEYS = [
    "search_space",
    "strategy",
    "n_trials",
    "seed",
    "runtime",
    "gpus_per_trial",
    "metric",
    "mode",
    "min_success_ratio",
    "max_parallel_tasks",
    "cache",
    "cache_key",
]


# -- sweep_params(rounds=..., trials_per_round=...) -------------------------------------------


def test_an_adaptive_sweeps_params_offer_rounds_trials_per_round_and_the_samplers():
    params = sweep_params(search_space=SPACE, strategy="tpe", rounds=4, trials_per_round=16)
    assert list(params) == [*ONE_STAGE_KEYS[:2], "rounds", "trials_per_round", *ONE_STAGE_KEYS[2:]]
    assert params["rounds"].schema == {"type": "integer", "minimum": 1, "maximum": 4, "title": "Rounds"}
    assert params["trials_per_round"].schema == {
        "type": "integer",
        "minimum": 1,
        "maximum": 16,
        "title": "Trials per round",
    }
    assert params["strategy"].schema["enum"] == list(ADAPTIVE_STRATEGIES) == ["tpe", "cmaes", "qmc", "random"]
    values = ParamsDict(params).validate()
    assert (values["strategy"], values["rounds"], values["trials_per_round"]) == ("tpe", 4, 16)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rounds", 0, "0 is less than the minimum of 1"),
        ("rounds", 5, "5 is greater than the maximum of 4"),
        ("rounds", "two", "'two' is not of type 'integer'"),
        ("trials_per_round", 0, "0 is less than the minimum of 1"),
        ("trials_per_round", 17, "17 is greater than the maximum of 16"),
        ("strategy", "grid", "'grid' is not one of ['tpe', 'cmaes', 'qmc', 'random']"),
    ],
    ids=["rounds-zero", "rounds-over-built", "rounds-text", "size-zero", "size-over-built", "grid"],
)
def test_the_form_refuses_more_rounds_than_built_and_grid(key, value, message):
    params = sweep_params(search_space=SPACE, strategy="tpe", rounds=4, trials_per_round=16)
    with pytest.raises(ParamValidationError) as err:
        params[key].resolve(value)
    assert str(err.value).splitlines()[0] == message


def test_the_form_may_choose_fewer_and_smaller_rounds():
    params = ParamsDict(sweep_params(search_space=SPACE, strategy="cmaes", rounds=4, trials_per_round=16))
    params["rounds"] = 1
    params["trials_per_round"] = 3
    params["strategy"] = "qmc"
    values = params.validate()
    assert (values["rounds"], values["trials_per_round"], values["strategy"]) == (1, 3, "qmc")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"rounds": 4},
            "an adaptive sweep's params need both rounds and trials_per_round, got rounds=4, trials_per_round=None",
        ),
        (
            {"trials_per_round": 16},
            "an adaptive sweep's params need both rounds and trials_per_round, got rounds=None, "
            "trials_per_round=16",
        ),
        (
            {"rounds": 4, "trials_per_round": 16, "strategy": "grid"},
            "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'grid'",
        ),
        ({"strategy": "tpe"}, "strategy must be one of ['grid', 'random'], got 'tpe'"),
    ],
    ids=["rounds-only", "trials-per-round-only", "adaptive-grid", "one-stage-tpe"],
)
def test_bad_sweep_params_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError) as err:
        sweep_params(search_space=SPACE, **kwargs)
    assert str(err.value) == message


def test_without_rounds_sweep_params_are_unchanged():
    params = sweep_params(search_space=SPACE)
    assert list(params) == ONE_STAGE_KEYS
    assert params["strategy"].schema["enum"] == list(STRATEGIES) == ["grid", "random"]
    assert ParamsDict(params).validate()["strategy"] == "random"


def test_rounds_and_trials_per_round_params_bounds():
    assert rounds_param(3).schema == {"type": "integer", "minimum": 1, "maximum": 3, "title": "Rounds"}
    assert rounds_param(2, maximum=5).schema["maximum"] == 5
    assert rounds_param(2, maximum=5).value == 2
    assert trials_per_round_param(8).schema["maximum"] == 8
    assert trials_per_round_param(8, maximum=32).schema["maximum"] == 32
    assert strategy_param("qmc", adaptive=True).schema["enum"] == list(ADAPTIVE_STRATEGIES)
    assert strategy_param().schema["enum"] == list(STRATEGIES)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: rounds_param(6, maximum=5), "rounds must be an integer between 1 and 5, got 6"),
        (lambda: rounds_param(2, maximum=0), "rounds maximum must be >= 1, got 0"),
        (lambda: rounds_param(2.5, maximum=4), "rounds must be an integer between 1 and 4, got 2.5"),
        (
            lambda: trials_per_round_param(17, maximum=16),
            "trials_per_round must be an integer between 1 and 16, got 17",
        ),
        (
            lambda: trials_per_round_param(0, maximum=4),
            "trials_per_round must be an integer between 1 and 4, got 0",
        ),
        (
            lambda: strategy_param("grid", adaptive=True),
            "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'grid'",
        ),
    ],
    ids=[
        "rounds-over-maximum",
        "rounds-maximum-zero",
        "rounds-float",
        "size-over-maximum",
        "size-zero",
        "adaptive-grid",
    ],
)
def test_bad_staged_param_defaults_fail_at_parse_time(factory, message):
    with pytest.raises(ValueError) as err:
        factory()
    assert str(err.value) == message


# -- the leaderboard files --------------------------------------------------------------------


def _row(trial_id: str, rank, loss=None, **extra) -> dict:
    row = {"rank": rank, "trial_id": trial_id, "status": "success" if rank else "failed", **extra}
    row["metrics"] = {"loss": loss} if loss is not None else {}
    return row


def _csv(result: dict) -> list[dict]:
    return list(csv.DictReader(io.StringIO(leaderboard_csv(result))))


def test_the_csv_of_rounds_has_a_round_column():
    result = {
        "metric": "loss",
        "kind": "rounds",
        "n_stages": 2,
        "leaderboard": [
            _row("b", 1, 0.1, round=1, hparams={"lr": 0.1}),
            _row("a", 2, 0.3, round=0, hparams={"lr": 0.2}, cached=True),
            _row("c", None, round=1, hparams={"lr": 0.5}, error="OOM"),
        ],
    }
    header = leaderboard_csv(result).splitlines()[0]
    assert header == "rank,trial_id,status,cached,loss,round,lr,error,mlflow_run_id"
    assert [(r["trial_id"], r["round"], r["cached"], r["loss"]) for r in _csv(result)] == [
        ("b", "1", "False", "0.1"),
        ("a", "0", "True", "0.3"),
        ("c", "1", "False", ""),
    ]
    document = json.loads(leaderboard_json(result))
    assert (document["kind"], document["n_stages"], document["best_trial_id"]) == ("rounds", 2, None)
    assert "budget_spent" not in document


def test_the_csv_of_rungs_has_rung_and_budget_columns_and_the_json_the_budget_spent():
    rungs = [{"rung": 0, "budget": 1, "status": "success", "loss": 0.5}]
    result = {
        "metric": "loss",
        "kind": "rungs",
        "n_stages": 2,
        "budget_spent": 12.0,
        "best": {"trial_id": "a"},
        "leaderboard": [
            _row(
                "a", 1, 0.1, rung=1, budget=3, hparams={"rung": "x"}, rungs=[*rungs, {"rung": 1, "budget": 3}]
            ),
            _row("b", 2, 0.5, rung=0, budget=1, hparams={"rung": "y"}, rungs=rungs),
        ],
    }
    lines = leaderboard_csv(result).splitlines()
    # an hparam named like a stage column gets the hparam. prefix
    assert lines[0] == "rank,trial_id,status,cached,loss,rung,budget,hparam.rung,error,mlflow_run_id"
    assert lines[1:] == ["1,a,success,False,0.1,1,3,x,,", "2,b,success,False,0.5,0,1,y,,"]
    document = json.loads(leaderboard_json(result))
    assert (document["kind"], document["n_stages"], document["budget_spent"]) == ("rungs", 2, 12.0)
    assert document["best_trial_id"] == "a"
    assert document["leaderboard"][0]["rungs"] == [*rungs, {"rung": 1, "budget": 3}]


def test_the_csv_of_a_one_stage_sweep_has_no_stage_columns():
    result = {"metric": "loss", "leaderboard": [_row("a", 1, 0.1, hparams={"lr": 0.1})]}
    assert leaderboard_csv(result).splitlines() == [
        "rank,trial_id,status,cached,loss,lr,error,mlflow_run_id",
        "1,a,success,False,0.1,0.1,,",
    ]
    assert set(json.loads(leaderboard_json(result))) == {
        "metric",
        "mode",
        "best_trial_id",
        "n_trials",
        "n_succeeded",
        "n_failed",
        "n_cached",
        "leaderboard",
    }


def test_an_adaptive_sweeps_strategy_defaults_to_tpe_and_can_be_chosen():
    from airflow_mlops_provider.params import sweep_params as params_of

    space = {"x": {"distribution": "float", "low": 0.0, "high": 1.0}}
    assert params_of(search_space=space, rounds=2, trials_per_round=4)["strategy"].value == "tpe"
    assert (
        params_of(search_space=space, rounds=2, trials_per_round=4, strategy="cmaes")["strategy"].value
        == "cmaes"
    )
    assert params_of(search_space=space)["strategy"].value == "random"
