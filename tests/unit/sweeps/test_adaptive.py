"""The adaptive planner without Airflow: search spaces onto Optuna's distributions, rounds asked of a
seeded sampler rebuilt from the results so far, and the parse-time strategy checks.

Real Optuna (an in-memory study), no mocks; a spy on ``Study.tell``/``add_trial`` only adds a check
of what the sampler was told. Every Optuna API used here exists in Optuna 4.0 (the declared floor).
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys

import pytest

from airflow_mlops_provider.sweeps.adaptive import (
    ADAPTIVE_STRATEGIES,
    check_strategy_space,
    optuna_distributions,
    suggest_trials,
)
from airflow_mlops_provider.sweeps.space import make_trial, trials_from_grid

#: A mixed space (float, int, choice) that every strategy accepts; its optimum is x=0.3, y=7, opt="b".
SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 0, "high": 10},
    "opt": ["a", "b", "c"],
}
LOGGER = "airflow_mlops_provider.sweeps.adaptive"


def loss_of(hparams: dict) -> float:
    """The closed-form loss: a weighted distance of each hparam to its optimum."""
    optimum = {"x": 0.3, "y": 7, "opt": "b", "layers": 2, "units": 64}
    loss = 0.0
    for name, value in hparams.items():
        if isinstance(value, str):
            loss += 0.0 if value == optimum[name] else 0.3
        else:
            loss += ((value - optimum[name]) / (10 if name == "y" else 100 if name == "units" else 1)) ** 2
    return loss


def records_of(trials: list[dict]) -> list[dict]:
    """The records a round of ``trials`` produces: each succeeds with the closed-form loss."""
    return [{**t, "status": "success", "metrics": {"loss": loss_of(t["hparams"])}} for t in trials]


def run_rounds(strategy: str, seed: int, rounds: int, size: int, space=SPACE) -> list[list[dict]]:
    """Run ``rounds`` rounds of ``size`` trials as the DAG's plan tasks do; return their records."""
    history: list[list[dict]] = []
    for _ in range(rounds):
        trials = suggest_trials(
            space, size, strategy=strategy, seed=seed, metric="loss", history=history, trials_per_round=size
        )
        history.append(records_of(trials))
    return history


def ids(trials) -> list[str]:
    return [t["trial_id"] for t in trials]


# -- search space -> Optuna distributions -----------------------------------------------------


def test_ranges_map_onto_int_and_float_distributions():
    from optuna.distributions import FloatDistribution, IntDistribution

    distributions, constants, encoded = optuna_distributions(
        {
            "layers": {"distribution": "int", "low": 1, "high": 10, "step": 3},
            "units": {"distribution": "int", "low": 0, "high": 10, "step": 3},
            "batch": {"distribution": "int", "low": 8, "high": 1024, "log": True},
            "depth": {"low": 2, "high": 8},
            "lr": {"distribution": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "dropout": {"distribution": "float", "low": 0.0, "high": 1.1, "step": 0.25},
            "momentum": {"distribution": "float", "low": 0.5, "high": 0.99, "num": 4},
        }
    )
    assert constants == {}
    assert encoded == set()
    assert distributions["layers"] == IntDistribution(1, 10, step=3)  # 1, 4, 7, 10
    assert distributions["units"] == IntDistribution(0, 9, step=3)  # high moved down onto the grid
    assert distributions["batch"] == IntDistribution(8, 1024, log=True)
    assert distributions["depth"] == IntDistribution(2, 8)
    assert distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    dropout = distributions["dropout"]
    assert isinstance(dropout, FloatDistribution)
    assert (dropout.low, dropout.step, dropout.log) == (0.0, 0.25, False)
    assert dropout.high == pytest.approx(1.0)  # 0, 0.25, ..., 1.0: 1.1 is not on the grid
    assert distributions["momentum"] == FloatDistribution(0.5, 0.99)  # num is for grids only


def test_choices_and_constants():
    from optuna.distributions import CategoricalDistribution

    distributions, constants, encoded = optuna_distributions(
        {
            "opt": ["adam", "sgd"],
            "mixed": {"distribution": "choice", "values": [1, "x", None, True, 2.5]},
            "layers": [[64, 64], [128], {"kind": "resnet", "depth": 18}],
            "epochs": 5,
            "name": "exp",
            "one": [7],
            "nested": {"distribution": "choice", "values": [{"a": 1}]},
        }
    )
    assert distributions == {
        "opt": CategoricalDistribution(["adam", "sgd"]),
        "mixed": CategoricalDistribution([1, "x", None, True, 2.5]),
        "layers": CategoricalDistribution(["[64,64]", "[128]", '{"depth":18,"kind":"resnet"}']),
    }
    assert encoded == {"layers"}
    assert constants == {"epochs": 5, "name": "exp", "one": 7, "nested": {"a": 1}}


def test_json_choices_and_constants_reach_every_trial_as_their_values():
    space = {
        "layers": [[64, 64], [128], {"kind": "resnet", "depth": 18}],
        "x": {"low": 0.0, "high": 1.0},
        "epochs": 5,
        "tags": [["a", "b"]],
    }
    trials = suggest_trials(space, 12, strategy="tpe", seed=3, metric="loss")
    assert len({t["trial_id"] for t in trials}) == 12
    for trial in trials:
        hparams = trial["hparams"]
        assert list(hparams) == ["layers", "x", "epochs", "tags"]  # the space's order
        assert hparams["layers"] in space["layers"]
        assert hparams["epochs"] == 5
        assert hparams["tags"] == ["a", "b"]
        assert trial == {**make_trial(hparams), "round": 0}  # the id is the one the grid would give
    assert {json.dumps(t["hparams"]["layers"], sort_keys=True) for t in trials} == {
        json.dumps(v, sort_keys=True) for v in space["layers"]
    }


def test_resources_entry_is_a_per_trial_choice_merged_with_the_default_resources():
    from optuna.distributions import CategoricalDistribution

    space = {
        "x": {"low": 0.0, "high": 1.0},
        "resources": [{"gpus": 1, "gpu_type": "NVIDIA-L4"}, {"cpus": 2}],
    }
    distributions, _, encoded = optuna_distributions(space)
    assert distributions["resources"] == CategoricalDistribution(
        ['{"gpu_type":"NVIDIA-L4","gpus":1}', '{"cpus":2.0}']
    )
    assert encoded == {"resources"}
    trials = suggest_trials(space, 10, strategy="tpe", seed=0, metric="loss", resources={"memory": "1Gi"})
    shapes = {str(sorted(t["resources"].items())) for t in trials}
    assert shapes == {
        str(sorted({"memory": 1073741824, "gpus": 1, "gpu_type": "NVIDIA-L4"}.items())),
        str(sorted({"memory": 1073741824, "cpus": 2.0}.items())),
    }
    for trial in trials:
        assert list(trial["hparams"]) == ["x"]  # resources is not a parameter
        assert trial["trial_id"] == make_trial(trial["hparams"], trial["resources"])["trial_id"]


def test_a_constant_resources_entry_goes_to_every_trial():
    trials = suggest_trials(
        {"x": {"low": 0.0, "high": 1.0}, "resources": {"gpus": 2}},
        3,
        strategy="random",
        metric="loss",
        resources={"cpus": 4},
    )
    assert [t["resources"] for t in trials] == [{"cpus": 4.0, "gpus": 2}] * 3


def test_a_space_the_form_refuses_is_a_value_error():
    with pytest.raises(ValueError, match=re.escape("search_space['x']: unknown distribution 'gaussian'")):
        optuna_distributions({"x": {"distribution": "gaussian", "low": 0, "high": 1}})


# -- suggest_trials ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ADAPTIVE_STRATEGIES)
def test_same_seed_and_history_ask_the_same_trials(strategy):
    first = run_rounds(strategy, seed=7, rounds=2, size=4)
    again = run_rounds(strategy, seed=7, rounds=2, size=4)
    assert [ids(r) for r in first] == [ids(r) for r in again]
    # a third round asked twice from the same history (a cleared plan task) is the same too
    third = [suggest_trials(SPACE, 4, strategy=strategy, seed=7, metric="loss", history=first) for _ in "ab"]
    assert ids(third[0]) == ids(third[1])
    other = run_rounds(strategy, seed=8, rounds=1, size=4)
    assert set(ids(other[0])).isdisjoint(ids(first[0]))


@pytest.mark.parametrize("strategy", ADAPTIVE_STRATEGIES)
def test_each_round_asks_new_distinct_trials_tagged_with_their_round(strategy):
    history = run_rounds(strategy, seed=1, rounds=2, size=4)
    trials = suggest_trials(SPACE, 5, strategy=strategy, seed=1, metric="loss", history=history)
    assert len(trials) == 5
    assert len(set(ids(trials))) == 5
    assert set(ids(trials)).isdisjoint(ids(history[0]) + ids(history[1]))
    assert [r["round"] for r in history[0] + history[1]] == [0] * 4 + [1] * 4
    assert {t["round"] for t in trials} == {2}
    for trial in trials:
        assert set(trial) == {"trial_id", "hparams", "round"}
        assert 0.0 <= trial["hparams"]["x"] <= 1.0
        assert trial["hparams"]["y"] in range(11)
        assert trial["hparams"]["opt"] in ("a", "b", "c")


def test_tpe_learns_from_the_rounds_before():
    """After two rounds of 8, TPE's third round is, on average, better than a first round."""
    history = run_rounds("tpe", seed=0, rounds=3, size=8)
    mean = [sum(r["metrics"]["loss"] for r in round_) / len(round_) for round_ in history]
    assert mean[2] < mean[0]


def _spy(monkeypatch) -> list[tuple[str, float | None]]:
    """Record what the sampler is told: (state, value) per told or added trial."""
    import optuna

    told: list[tuple[str, float | None]] = []
    tell, add_trial = optuna.study.Study.tell, optuna.study.Study.add_trial

    def spy_tell(self, trial, values=None, state=None, **kwargs):
        told.append((state.name, values))
        return tell(self, trial, values, state=state, **kwargs)

    def spy_add(self, trial):
        told.append((trial.state.name, trial.value))
        return add_trial(self, trial)

    monkeypatch.setattr(optuna.study.Study, "tell", spy_tell)
    monkeypatch.setattr(optuna.study.Study, "add_trial", spy_add)
    return told


def _mixed_outcomes(trials: list[dict]) -> list[dict]:
    """Five records: a success, a failure (with a tempting metric), a cached success, a success
    without the metric, and one whose metric is NaN."""
    a, b, c, d, e = trials
    return [
        {**a, "status": "success", "metrics": {"loss": 0.5}},
        {**b, "status": "failed", "error": "boom", "metrics": {"loss": -100.0}},
        {**c, "status": "success", "metrics": {"loss": 0.2}, "cached": True},
        {**d, "status": "success", "metrics": {"accuracy": 0.9}},
        {**e, "status": "success", "metrics": {"loss": math.nan}},
    ]


EXPECTED_TOLD = [("COMPLETE", 0.5), ("FAIL", None), ("COMPLETE", 0.2), ("FAIL", None), ("FAIL", None)]


def test_failed_trials_are_told_as_failed_and_cached_ones_as_finished(monkeypatch):
    history = [_mixed_outcomes(suggest_trials(SPACE, 5, seed=2, metric="loss"))]
    told = _spy(monkeypatch)
    trials = suggest_trials(SPACE, 3, seed=2, metric="loss", history=history)
    assert told == EXPECTED_TOLD  # the replayed round, in order; the new round is not told
    assert len(trials) == 3


def test_a_failed_trial_does_not_attract_the_sampler_whatever_its_metric():
    history = run_rounds("tpe", seed=4, rounds=2, size=4)

    def next_round(status: str, value: float) -> list[str]:
        changed = [*history[1][:3], {**history[1][3], "status": status, "metrics": {"loss": value}}]
        return ids(suggest_trials(SPACE, 4, seed=4, metric="loss", history=[history[0], changed]))

    assert next_round("failed", -100.0) == next_round("failed", 100.0)
    assert next_round("success", -100.0) != next_round("failed", -100.0)


def test_a_history_of_failures_still_asks_a_full_round():
    history = []
    for _ in range(2):
        trials = suggest_trials(SPACE, 4, seed=5, metric="loss", history=history)
        history.append([{**t, "status": "failed", "error": "OOM"} for t in trials])
    trials = suggest_trials(SPACE, 4, seed=5, metric="loss", history=history)
    assert len(set(ids(trials))) == 4
    assert set(ids(trials)).isdisjoint(ids(history[0]) + ids(history[1]))


def test_a_history_that_does_not_replay_is_told_instead_with_a_warning(monkeypatch, caplog):
    # records of another seed: replaying round 1 with seed 1 asks other trials
    history = [_mixed_outcomes(suggest_trials(SPACE, 5, seed=2, metric="loss"))]
    told = _spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trials = suggest_trials(SPACE, 4, seed=1, metric="loss", history=history)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("Replaying round 1 gave other trials than it ran")
    assert "the sampler is rebuilt from the told results instead" in warning
    # the aborted replay's first asks are told nothing; then each record is added as it ended
    assert told[-5:] == EXPECTED_TOLD
    assert len(set(ids(trials))) == 4
    assert set(ids(trials)).isdisjoint(ids(history[0]))
    assert ids(suggest_trials(SPACE, 4, seed=1, metric="loss", history=history)) == ids(trials)


def test_the_rebuilt_study_is_told_json_choices_and_resources_back(monkeypatch, caplog):
    space = {
        "x": {"low": 0.0, "high": 1.0},
        "layers": [[64, 64], [128]],
        "resources": [{"gpus": 1}, {"cpus": 2}],
    }
    round_1 = suggest_trials(space, 4, seed=2, metric="loss", resources={"memory": "1Gi"})
    history = [[{**t, "status": "success", "metrics": {"loss": t["hparams"]["x"]}} for t in round_1]]
    told = _spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trials = suggest_trials(space, 4, seed=1, metric="loss", history=history, resources={"memory": "1Gi"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the replay's; every record fits the space and is told
    assert told[-4:] == [("COMPLETE", t["hparams"]["x"]) for t in round_1]
    assert len(set(ids(trials))) == 4
    assert all(t["resources"]["memory"] == 1073741824 for t in trials)


def test_a_recorded_trial_outside_the_space_is_not_told(caplog):
    stray = {**make_trial({"x": 5.0, "y": 3, "opt": "a"}), "status": "success", "metrics": {"loss": 0.1}}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trials = suggest_trials(SPACE, 3, seed=0, metric="loss", history=[[stray]])
    messages = [r.getMessage() for r in caplog.records]
    assert f"Trial {stray['trial_id']} does not fit the search space: not told" in messages
    assert len(trials) == 3
    assert stray["trial_id"] not in ids(trials)


GRID = {"a": ["p", "q"], "b": [1, 2, 3]}  # 6 points
INT_GRID = {"a": {"low": 0, "high": 1}, "b": {"low": 0, "high": 2}}  # 6 points, int ranges


@pytest.mark.parametrize(
    ("strategy", "space"),
    [("tpe", GRID), ("random", GRID), ("tpe", INT_GRID), ("qmc", INT_GRID), ("random", INT_GRID)],
    ids=["tpe-choices", "random-choices", "tpe-ints", "qmc-ints", "random-ints"],
)
def test_a_small_space_is_asked_point_by_point_until_it_is_exhausted(strategy, space):
    every = {t["trial_id"] for t in trials_from_grid(space)}
    first = suggest_trials(space, 4, strategy=strategy, seed=0, metric="loss", trials_per_round=4)
    history = [[{**t, "status": "success", "metrics": {"loss": i}} for i, t in enumerate(first)]]
    rest = suggest_trials(
        space, 2, strategy=strategy, seed=0, metric="loss", history=history, trials_per_round=4
    )
    assert set(ids(first)) | set(ids(rest)) == every
    with pytest.raises(ValueError) as err:
        suggest_trials(
            space, 3, strategy=strategy, seed=0, metric="loss", history=history, trials_per_round=4
        )
    assert str(err.value) == (
        "the sampler found only 2 new distinct trials of the 3 asked for round 2 (the space may be "
        "nearly exhausted); lower trials_per_round or widen the space"
    )
    with pytest.raises(
        ValueError, match=re.escape("found only 6 new distinct trials of the 7 asked for round 1")
    ):
        suggest_trials(space, 7, strategy=strategy, seed=0, metric="loss")


def test_cmaes_keeps_asking_new_points_of_a_small_discrete_space():
    """32 points, 3 rounds of 8: CMA-ES converges and proposes the points it tried; the round is
    still filled with untried points (24 distinct trials in all)."""
    space = {"layers": {"low": 1, "high": 4}, "units": {"low": 16, "high": 128, "step": 16}}
    history = run_rounds("cmaes", seed=0, rounds=3, size=8, space=space)
    assert len({t["trial_id"] for round_ in history for t in round_}) == 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"n": True}, "n must be an integer >= 1, got True"),
        ({"n": 2.0}, "n must be an integer >= 1, got 2.0"),
        ({"mode": "median"}, "mode must be 'min' or 'max', got 'median'"),
        ({"seed": "1"}, "seed must be an integer, got '1'"),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"strategy": "bayes"}, "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'bayes'"),
        (
            {"strategy": "grid"},
            "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'grid' (grid has no rounds: "
            "use plan_sweep)",
        ),
    ],
    ids=["n-zero", "n-bool", "n-float", "bad-mode", "seed-text", "seed-bool", "unknown-strategy", "grid"],
)
def test_bad_arguments_are_value_errors_naming_the_value(kwargs, message):
    args = {"n": 2, "strategy": "tpe", "seed": 0, "mode": "min", **kwargs}
    n = args.pop("n")
    with pytest.raises(ValueError) as err:
        suggest_trials(SPACE, n, metric="loss", **args)
    assert str(err.value) == message


# -- check_strategy_space (parse time) --------------------------------------------------------

ONLY_CHOICES = {"opt": ["adam", "sgd"], "act": ["relu", "gelu"], "epochs": 3}


@pytest.mark.parametrize(
    ("space", "strategy", "message"),
    [
        (SPACE, "bayes", "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'bayes'"),
        (SPACE, None, "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got None"),
        (
            SPACE,
            "grid",
            "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'grid' (grid has no rounds: "
            "use plan_sweep)",
        ),
        (
            ONLY_CHOICES,
            "cmaes",
            "strategy 'cmaes' samples int and float ranges only, and search_space has only choices "
            "['opt', 'act']; use strategy='tpe' (or 'random') for this space",
        ),
        (
            ONLY_CHOICES,
            "qmc",
            "strategy 'qmc' samples int and float ranges only, and search_space has only choices "
            "['opt', 'act']; use strategy='tpe' (or 'random') for this space",
        ),
        (
            {"lr": {"distribution": "float", "low": 1e-4, "high": 1.0, "log": True, "step": 0.1}},
            "tpe",
            "search_space['lr']: step cannot be combined with log=true, got step=0.1",
        ),
        (
            {"n": {"distribution": "int", "low": 1, "high": 100, "log": True, "step": 2}},
            "tpe",
            "search_space['n']: step cannot be combined with log=true, got step=2",
        ),
        (
            {"epochs": 3, "opt": ["adam"], "name": "exp"},
            "tpe",
            "search_space has nothing to search: every entry is a constant ['epochs', 'opt', 'name']; "
            "give a range or a choice of two or more values",
        ),
    ],
    ids=[
        "unknown",
        "none",
        "grid",
        "cmaes-only-choices",
        "qmc-only-choices",
        "float-log-step",
        "int-log-step",
        "all-constant",
    ],
)
def test_check_strategy_space_refuses(space, strategy, message):
    with pytest.raises(ValueError) as err:
        check_strategy_space(space, strategy)
    assert str(err.value) == message


@pytest.mark.parametrize("strategy", ["cmaes", "qmc"])
def test_numeric_samplers_take_a_mixed_space_and_say_the_choices_are_random(strategy, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        dims = check_strategy_space({**ONLY_CHOICES, "lr": {"low": 1e-4, "high": 1.0, "log": True}}, strategy)
    assert [d.name for d in dims] == ["opt", "act", "epochs", "lr"]
    assert (
        f"strategy {strategy!r}: the choices ['opt', 'act'] are drawn at random (it models ranges only)"
        in [r.getMessage() for r in caplog.records]
    )


@pytest.mark.parametrize("strategy", ["tpe", "random"])
def test_tpe_and_random_take_a_space_of_choices(strategy):
    assert [d.name for d in check_strategy_space(ONLY_CHOICES, strategy)] == ["opt", "act", "epochs"]
    trials = suggest_trials(ONLY_CHOICES, 4, strategy=strategy, metric="loss")
    assert sorted((t["hparams"]["opt"], t["hparams"]["act"]) for t in trials) == [
        ("adam", "gelu"),
        ("adam", "relu"),
        ("sgd", "gelu"),
        ("sgd", "relu"),
    ]


def test_check_strategy_space_does_not_import_optuna():
    code = (
        "import sys\n"
        "from airflow_mlops_provider.sweeps.adaptive import check_strategy_space\n"
        "check_strategy_space({'x': {'low': 0.0, 'high': 1.0}, 'opt': ['a', 'b']}, 'cmaes')\n"
        "try:\n"
        "    check_strategy_space({'opt': ['a', 'b']}, 'qmc')\n"
        "except ValueError:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'cmaes', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
