"""Successive halving: the schedule, promotion, the ranking of rungs, the rung tags a retry reads back,
the task groups halving_sweep builds, and one real DAG run (``dag.test()``, untracked).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_mlops_provider.exceptions import SweepError
from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import Halving, halving, halving_sweep, promote, trial_task
from airflow_mlops_provider.sweeps.halving import rank_rungs
from airflow_mlops_provider.sweeps.space import make_trial, trials_from_random
from airflow_mlops_provider.sweeps.tracking_store import rung_outcome, rung_tag
from tests.unit.sweeps.test_rounds import _KEPT, COMMON, _keep, _tasks, loss_of, run_in_dag_test

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 0, "high": 10},
    "opt": ["a", "b", "c"],
}
DAG_ID = "mlops_unit_halving"
SEED = 5


# -- the schedule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "budgets", "n", "sizes", "total"),
    [
        ((1, 27, 3), [1, 3, 9, 27], 27, [27, 9, 3, 1], 108),
        ((1, 10, 3), [1, 3, 10], 10, [10, 3, 1], 29),
        ((1, 8, 2), [1, 2, 4, 8], 8, [8, 4, 2, 1], 32),
        ((1, 100, 3), [1, 3, 9, 27, 100], 9, [9, 3, 1, 1, 1], 154),
        ((0.5, 4.5, 3), [0.5, 1.5, 4.5], 9, [9, 3, 1], 13.5),
        ((1.0, 27, 3), [1.0, 3.0, 9.0, 27], 3, [3, 1, 1, 1], 42.0),
        ((1, 6.25, 2.5), [1.0, 2.5, 6.25], 10, [10, 4, 1], 26.25),
    ],
    ids=["1-27-3", "1-10-3", "1-8-2", "last-rung-max-budget", "float-budgets", "float-min", "float-eta"],
)
def test_budgets_sizes_and_total_budget(args, budgets, n, sizes, total):
    schedule = halving(*args)
    assert schedule.budgets == budgets
    assert [type(b) for b in schedule.budgets] == [type(b) for b in budgets]
    assert schedule.sizes(n) == sizes
    assert schedule.total_budget(n) == pytest.approx(total)


def test_sizes_never_drop_below_one_trial():
    assert halving(1, 27, 3).sizes(2) == [2, 1, 1, 1]
    assert halving(1, 27, 3).sizes(1) == [1, 1, 1, 1]


def test_the_schedule_is_a_frozen_value():
    schedule = halving(1, 9)
    assert schedule == Halving(min_budget=1, max_budget=9, eta=3)
    assert dataclasses.asdict(schedule) == {"min_budget": 1, "max_budget": 9, "eta": 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.eta = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 27, 1), "eta must be a number >= 2, got 1"),
        ((1, 27, 1.5), "eta must be a number >= 2, got 1.5"),
        ((1, 27, True), "eta must be a number >= 2, got True"),
        ((1, 27, math.nan), "eta must be a number >= 2, got nan"),
        ((1, 27, "3"), "eta must be a number >= 2, got '3'"),
        ((9, 9, 3), "min_budget must be less than max_budget, got min_budget=9, max_budget=9"),
        ((27, 1, 3), "min_budget must be less than max_budget, got min_budget=27, max_budget=1"),
        ((0, 27, 3), "min_budget must be a positive number, got 0"),
        ((-1, 27, 3), "min_budget must be a positive number, got -1"),
        ((math.nan, 27, 3), "min_budget must be a positive number, got nan"),
        ((True, 27, 3), "min_budget must be a positive number, got True"),
        (("1", 27, 3), "min_budget must be a positive number, got '1'"),
        ((None, 27, 3), "min_budget must be a positive number, got None"),
        ((1, 0, 3), "max_budget must be a positive number, got 0"),
        ((1, -27, 3), "max_budget must be a positive number, got -27"),
        ((1, math.inf, 3), "max_budget must be a positive number, got inf"),
        ((1, False, 3), "max_budget must be a positive number, got False"),
        ((1, 2, 3), "max_budget must be at least min_budget * eta = 3 for one promotion, got max_budget=2"),
        (
            (0.5, 1.0, 3),
            "max_budget must be at least min_budget * eta = 1.5 for one promotion, got max_budget=1.0",
        ),
    ],
    ids=[
        "eta-1",
        "eta-1.5",
        "eta-bool",
        "eta-nan",
        "eta-text",
        "min-equals-max",
        "min-over-max",
        "min-zero",
        "min-negative",
        "min-nan",
        "min-bool",
        "min-text",
        "min-none",
        "max-zero",
        "max-negative",
        "max-inf",
        "max-bool",
        "no-promotion",
        "no-promotion-float",
    ],
)
def test_bad_schedules_are_value_errors_naming_the_value(args, message):
    with pytest.raises(ValueError) as err:
        halving(*args)
    assert str(err.value) == message


# -- promote ----------------------------------------------------------------------------------


def _record(trial_id: str, status: str = "success", loss=None, **extra) -> dict:
    record = {"trial_id": trial_id, "hparams": {"k": trial_id}, "status": status, **extra}
    if loss is not None:
        record["metrics"] = {"loss": loss}
    return record


RUNG = [
    _record("e", loss=0.5, rung=0, budget=1, resources={"gpus": 1}, seconds=2.0),
    _record("b", loss=0.2, rung=0, budget=1),
    _record("d", loss=0.2, rung=0, budget=1),
    _record("a", loss=0.9, rung=0, budget=1),
    _record("c", loss=0.7, rung=0, budget=1, cached=True),
    _record("f", "failed", loss=0.0, rung=0, budget=1, error="boom"),  # a failure is never promoted
    _record("g", loss=math.nan, rung=0, budget=1),
    _record("h", loss=math.inf, rung=0, budget=1),
    _record("i", rung=0, budget=1),  # no metric
    {**_record("j", rung=0, budget=1), "metrics": {"loss": True}},
    {**_record("k", rung=0, budget=1), "metrics": {"accuracy": 0.1}},
]


def test_promote_keeps_the_best_by_the_metric_with_ties_by_trial_id():
    assert [t["trial_id"] for t in promote(RUNG, 3, metric="loss", mode="min")] == ["b", "d", "e"]
    assert [t["trial_id"] for t in promote(RUNG, 3, metric="loss", mode="max")] == ["a", "c", "e"]
    assert [t["trial_id"] for t in promote(RUNG, 100, metric="loss", mode="min")] == ["b", "d", "e", "c", "a"]
    assert promote(RUNG, 0, metric="loss", mode="min") == []
    assert promote(RUNG, 3, metric="accuracy", mode="min") == [{"trial_id": "k", "hparams": {"k": "k"}}]


def test_promote_keeps_the_trial_not_its_outcome():
    (best,) = promote(RUNG, 1, metric="loss", mode="max")
    assert best == {"trial_id": "a", "hparams": {"k": "a"}}
    (with_resources,) = promote([RUNG[0]], 1, metric="loss", mode="min")
    assert with_resources == {"trial_id": "e", "hparams": {"k": "e"}, "resources": {"gpus": 1}}


# -- rank_rungs -------------------------------------------------------------------------------


def _stages() -> list[list[dict]]:
    """9 trials at budget 1 (one failed), the best 3 at budget 3 (one failed), the best 1 at 9."""
    rung0 = [_record(t, loss=loss, rung=0, budget=1) for t, loss in zip("abcdefgh", [8, 7, 6, 5, 4, 3, 2, 1])]
    rung0.append(_record("z", "failed", rung=0, budget=1, error="OOM"))
    rung1 = [
        _record("h", loss=0.6, rung=1, budget=3),
        _record("g", "failed", rung=1, budget=3, error="NaN loss"),
        _record("f", loss=0.4, rung=1, budget=3, cached=True),
    ]
    rung2 = [_record("f", loss=0.1, rung=2, budget=9)]
    return [rung0, rung1, rung2]


def test_rank_rungs_ranks_higher_rungs_first():
    result = rank_rungs(_stages(), metric="loss", mode="min", min_success_ratio=0.5)
    board = result["leaderboard"]
    assert [(r["trial_id"], r["rung"], r["rank"]) for r in board] == [
        ("f", 2, 1),
        ("h", 1, 2),
        ("e", 0, 3),
        ("d", 0, 4),
        ("c", 0, 5),
        ("b", 0, 6),
        ("a", 0, 7),
        ("g", 1, None),  # failed at rung 2: last, without a rank, whatever it did at rung 1
        ("z", 0, None),
    ]
    assert result["best"]["trial_id"] == "f"
    assert result["best"]["metrics"] == {"loss": 0.1}
    assert (result["metric"], result["mode"]) == ("loss", "min")
    assert (result["n_trials"], result["n_succeeded"], result["n_failed"]) == (9, 8, 1)
    # 9 at budget 1, 3 at budget 3 but f's came from the cache, 1 at budget 9
    assert result["budget_spent"] == 9 * 1 + 2 * 3 + 9


def test_each_row_lists_the_trials_metric_per_rung():
    board = {
        r["trial_id"]: r
        for r in rank_rungs(_stages(), metric="loss", mode="min", min_success_ratio=0.5)["leaderboard"]
    }
    assert board["f"]["rungs"] == [
        {"rung": 0, "budget": 1, "status": "success", "loss": 3},
        {"rung": 1, "budget": 3, "status": "success", "loss": 0.4},
        {"rung": 2, "budget": 9, "status": "success", "loss": 0.1},
    ]
    assert board["g"]["rungs"] == [
        {"rung": 0, "budget": 1, "status": "success", "loss": 2},
        {"rung": 1, "budget": 3, "status": "failed", "loss": None},
    ]
    assert board["a"]["rungs"] == [{"rung": 0, "budget": 1, "status": "success", "loss": 8}]
    assert board["g"]["error"] == "NaN loss"


def test_rank_rungs_in_max_mode():
    stages = [
        [_record("a", loss=0.1, rung=0, budget=1), _record("b", loss=0.9, rung=0, budget=1)],
        [_record("b", loss=0.95, rung=1, budget=3)],
    ]
    result = rank_rungs(stages, metric="loss", mode="max", min_success_ratio=1.0)
    assert [(r["trial_id"], r["rank"]) for r in result["leaderboard"]] == [("b", 1), ("a", 2)]


def test_when_every_promoted_trial_fails_the_best_is_the_best_of_the_rung_below():
    stages = [
        [_record("a", loss=0.1, rung=0, budget=1), _record("b", loss=0.9, rung=0, budget=1)],
        [_record("a", "failed", rung=1, budget=3, error="OOM")],
    ]
    result = rank_rungs(stages, metric="loss", mode="min", min_success_ratio=0.5)
    assert [(r["trial_id"], r["rank"]) for r in result["leaderboard"]] == [("b", 1), ("a", None)]
    assert result["budget_spent"] == 5


def test_min_success_ratio_applies_to_the_first_rung():
    stages = _stages()
    rung0 = [*stages[0][:3], *[_record(f"x{i}", "failed", rung=0, budget=1, error="OOM") for i in range(5)]]
    with pytest.raises(
        SweepError, match=re.escape("only 3 of 8 trials succeeded (38%), below min_success_ratio=0.5")
    ):
        rank_rungs([rung0], metric="loss", mode="min", min_success_ratio=0.5)
    # later rungs' failures do not count towards it
    later = [_record("a", loss=1, rung=0, budget=1), _record("b", loss=2, rung=0, budget=1)]
    result = rank_rungs(
        [later, [_record("a", "failed", rung=1, budget=3, error="x")]],
        metric="loss",
        mode="min",
        min_success_ratio=1.0,
    )
    assert result["best"]["trial_id"] == "b"


@pytest.mark.parametrize("stages", [[], [[]]], ids=["no-stage", "empty-first-rung"])
def test_rank_rungs_without_results_is_a_sweep_error(stages):
    with pytest.raises(SweepError, match=re.escape("the halving sweep has no trial results to select from")):
        rank_rungs(stages, metric="loss", mode="min", min_success_ratio=0)


# -- the rung tags: what a retried or cached rung reads back ------------------------------------


def _run(tags: dict, status: str = "RUNNING"):
    """A stand-in for an MLflow Run (only the attributes the pure readers use)."""
    return types.SimpleNamespace(
        info=types.SimpleNamespace(run_id="r1", status=status),
        data=types.SimpleNamespace(tags=tags, metrics={"loss": 99.0}),
    )


TRIAL = {**make_trial({"x": 1}), "rung": 1, "budget": 3}


def test_a_successful_rung_round_trips_with_its_metrics_and_small_outputs():
    record = {**TRIAL, "status": "success", "metrics": {"loss": 0.25, "acc": 0.9}, "outputs": {"path": "/m"}}
    tag = rung_tag(record)
    assert list(tag) == ["mlops.rung.1"]
    assert json.loads(tag["mlops.rung.1"]) == {
        "budget": 3,
        "status": "success",
        "metrics": {"loss": 0.25, "acc": 0.9},
        "outputs": {"path": "/m"},
    }
    # the run's own metrics (the last rung's) are not what the rung read returns
    assert rung_outcome(_run(tag), TRIAL, metric="loss", cache_failures=False) == (
        {"status": "success", "metrics": {"loss": 0.25, "acc": 0.9}, "outputs": {"path": "/m"}},
        None,
    )


def test_large_outputs_are_left_out_of_the_rung_tag():
    record = {**TRIAL, "status": "success", "metrics": {"loss": 0.25}, "outputs": {"blob": "x" * 5000}}
    tag = rung_tag(record)
    assert "outputs" not in json.loads(tag["mlops.rung.1"])
    assert rung_outcome(_run(tag), TRIAL, metric="loss", cache_failures=True) == (
        {"status": "success", "metrics": {"loss": 0.25}},
        None,
    )


def test_a_failed_rung_is_reused_only_with_cache_failures():
    record = {**TRIAL, "status": "failed", "error": "E" * 3000, "failure": "trial", "tail": ["x"]}
    tag = rung_tag(record)
    data = json.loads(tag["mlops.rung.1"])
    assert (data["status"], data["failure"], len(data["error"])) == ("failed", "trial", 1000)
    assert data["error"].endswith("...[truncated 3000 chars]")
    outcome, why = rung_outcome(_run(tag, "FAILED"), TRIAL, metric="loss", cache_failures=True)
    assert why is None
    assert outcome == {"status": "failed", "error": data["error"], "tail": [], "failure": "trial"}
    assert rung_outcome(_run(tag, "FAILED"), TRIAL, metric="loss", cache_failures=False) == (
        None,
        "run r1 failed at rung 2 (trial)",
    )


def test_a_failure_around_the_trial_is_never_reused():
    tag = rung_tag({**TRIAL, "status": "failed", "error": "MLflow down", "failure": "infra"})
    assert rung_outcome(_run(tag), TRIAL, metric="loss", cache_failures=True) == (
        None,
        "run r1 failed at rung 2 (infra)",
    )


def test_a_rung_at_another_budget_or_without_the_metric_is_a_miss():
    tag = rung_tag({**TRIAL, "status": "success", "metrics": {"accuracy": 0.9}})
    assert rung_outcome(_run(tag), {**TRIAL, "budget": 9}, metric="loss", cache_failures=True) == (
        None,
        "run r1 ran rung 2 at budget 3, not 9",
    )
    assert rung_outcome(_run(tag), TRIAL, metric="loss", cache_failures=True) == (
        None,
        "run r1 lacks metric 'loss' at rung 2",
    )
    assert rung_outcome(_run(tag), TRIAL, metric=None, cache_failures=True)[0] == {
        "status": "success",
        "metrics": {"accuracy": 0.9},
    }


def test_a_rung_that_did_not_run_is_a_miss():
    tag = rung_tag({**TRIAL, "rung": 0, "budget": 1, "status": "success", "metrics": {"loss": 1.0}})
    assert rung_outcome(_run(tag), TRIAL, metric="loss", cache_failures=True) == (
        None,
        "run r1 has no result for rung 2",
    )
    assert rung_outcome(_run({"mlops.rung.1": "not json"}), TRIAL, metric="loss", cache_failures=True) == (
        None,
        "run r1 has no result for rung 2",
    )


def test_a_trial_without_a_rung_has_no_rung_tag():
    assert rung_tag({**make_trial({"x": 1}), "status": "success", "metrics": {"loss": 1.0}}) == {}


# -- halving_sweep at parse time --------------------------------------------------------------


@trial_task
def train(x: float, y: int, opt: str, budget: float | None = None) -> dict:
    """Fails on purpose at y == 0; a smaller budget adds an error that shrinks as it grows."""
    if y == 0:
        raise ValueError("y=0 is a failing region")
    return {"loss": loss_of(x, y, opt) + 0.5 / budget, "outputs": {"budget": budget}}


def test_rungs_are_task_groups_of_a_plan_and_the_mapped_trial_task():
    with DAG("parse", schedule=None) as dag:
        best = halving_sweep(train, halving(1, 9, 3), n_trials=9, search_space=SPACE)
    assert best.operator.task_id == "select_best"
    assert _tasks(dag) == {
        "rung_1.plan": ("all_done", []),
        "rung_1.train": ("all_success", ["rung_1.plan"]),
        "rung_2.plan": ("all_done", ["rung_1.train"]),
        "rung_2.train": ("all_success", ["rung_2.plan"]),
        "rung_3.plan": ("all_done", ["rung_1.train", "rung_2.train"]),
        "rung_3.train": ("all_success", ["rung_3.plan"]),
        "select_best": ("all_done", ["rung_1.train", "rung_2.train", "rung_3.train"]),
    }


def test_one_rung_per_budget_under_a_group_id_and_container_trials():
    from airflow_mlops_provider.sweeps import container_trials

    with DAG("parse", schedule=None) as dag:
        halving_sweep(
            lambda batches: container_trials(
                task_id="fit", batches=batches, runtime="docker", image="python:3.11", command=["train"]
            ),
            halving(1, 27, 3),
            n_trials=27,
            group_id="sh",
        )
    assert sorted(_tasks(dag)) == [
        *[f"sh.rung_{k}.{t}" for k in (1, 2, 3, 4) for t in ("fit", "plan")],
        "sh.select_best",
    ]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 9, 3), {}, "schedule must be halving(min_budget, max_budget, eta), got (1, 9, 3)"),
        (None, {"n_trials": 0}, "n_trials must be an integer >= 1, got 0"),
        (None, {"n_trials": True}, "n_trials must be an integer >= 1, got True"),
        (
            None,
            {"n_trials": 10, "max_trials": 9},
            "n_trials must be an integer from 1 to 9, got 10",
        ),
        (None, {"max_trials": 0}, "max_trials must be an integer >= 1, got 0"),
        (
            None,
            {"strategy": "tpe"},
            "the first rung draws its trials with 'random' or 'grid', got strategy='tpe'",
        ),
        (None, {"rounds": 3}, f"halving_sweep got unknown arguments ['rounds']; it takes {COMMON}"),
        (
            None,
            {"search_space": {"x": {"distribution": "float", "low": 1, "high": 0}}},
            "search_space['x']: low must be <= high, got low=1, high=0",
        ),
    ],
    ids=["not-a-schedule", "n-zero", "n-bool", "n-over-max", "max-zero", "tpe", "unknown-kwarg", "bad-space"],
)
def test_bad_static_arguments_are_parse_time_value_errors(args, kwargs, message):
    schedule = args if args is not None else halving(1, 9, 3)
    kwargs = {"n_trials": 9, **kwargs}
    with DAG("parse", schedule=None), pytest.raises(ValueError) as err:
        halving_sweep(train, schedule, **kwargs)
    assert str(err.value) == message


def test_the_trial_argument_must_make_a_task():
    with DAG("parse", schedule=None), pytest.raises(ValueError, match=re.escape("got 'train'")):
        halving_sweep("train", halving(1, 9, 3), n_trials=9)


# -- one real DAG run (dag.test) --------------------------------------------------------------


def build_halving_dag():
    from airflow.sdk import dag, task

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        params=sweep_params(search_space=SPACE, n_trials=9, seed=SEED),
    )
    def halving_dag():
        best = halving_sweep(train, halving(1, 9, 3), n_trials=9, mlflow_conn_id=None, min_success_ratio=0.3)
        task(_keep, task_id="keep")(best)

    return halving_dag()


@pytest.fixture(scope="module")
def halving_run(airflow_db):
    _KEPT.pop(DAG_ID, None)
    (dag_run,) = run_in_dag_test(build_halving_dag, DAG_ID, __name__, [None])
    assert dag_run.state == "success"
    (result,) = _KEPT[DAG_ID]
    return result


def test_the_first_rung_draws_n_trials_and_each_rung_promotes_the_best_third(halving_run):
    result = halving_run
    assert (result["kind"], result["n_stages"], result["n_trials"], result["n_cached"]) == ("rungs", 3, 9, 0)
    drawn = trials_from_random(SPACE, 9, SEED)
    assert sorted(r["trial_id"] for r in result["leaderboard"]) == sorted(t["trial_id"] for t in drawn)
    reached = {r["trial_id"]: (r["rung"], r["budget"]) for r in result["leaderboard"]}
    assert sorted(reached.values()) == [(0, 1)] * 6 + [(1, 3)] * 2 + [(2, 9)]
    # the promoted are the best of the rung below, by the trial's own loss at that budget
    ok0 = sorted((loss_of(**t["hparams"]) + 0.5, t["trial_id"]) for t in drawn if t["hparams"]["y"] != 0)
    assert {tid for tid, (rung, _) in reached.items() if rung >= 1} == {tid for _, tid in ok0[:3]}
    assert result["budget_spent"] == 9 * 1 + 3 * 3 + 1 * 9


def test_the_best_is_the_trial_of_the_last_rung_with_its_metric_per_rung(halving_run):
    best = halving_run["best"]
    assert (best["rung"], best["budget"], best["rank"]) == (2, 9, 1)
    assert best["outputs"] == {"budget": 9}  # the trial received its rung's budget
    assert best["metrics"]["loss"] == pytest.approx(loss_of(**best["hparams"]) + 0.5 / 9)
    assert [(h["rung"], h["budget"], h["status"]) for h in best["rungs"]] == [
        (0, 1, "success"),
        (1, 3, "success"),
        (2, 9, "success"),
    ]
    assert [h["loss"] for h in best["rungs"]] == pytest.approx(
        [loss_of(**best["hparams"]) + 0.5 / b for b in (1, 3, 9)]
    )
    for row in halving_run["leaderboard"]:
        assert {"rung", "budget", "rungs", "rank", "status"} <= set(row)
        assert row["mlflow_run_id"] is None  # untracked


def test_float_budgets_carry_no_floating_point_noise():
    assert halving(0.1, 0.9, 3).budgets == [0.1, 0.3, 0.9]


def test_a_form_default_over_max_trials_is_refused_at_parse_time():
    from airflow.sdk import dag

    @dag(schedule=None, params=sweep_params(search_space=SPACE, n_trials=20))
    def too_many():
        halving_sweep(train, halving(1, 9, 3), n_trials=9, max_trials=9)

    with pytest.raises(ValueError) as err:
        too_many()
    assert str(err.value) == (
        "the DAG param 'n_trials' has default 20, more than the 9 this DAG builds; "
        "raise the sweep's n_trials or lower the param's"
    )


def test_without_max_trials_the_form_chooses_the_first_rung_size():
    from airflow.sdk import dag

    @dag(schedule=None, params=sweep_params(search_space=SPACE, n_trials=20))
    def form_decides():
        halving_sweep(train, halving(1, 9, 3), n_trials=9)

    assert form_decides().params["n_trials"] == 20
