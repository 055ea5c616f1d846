"""adaptive_sweep: the task groups it builds at parse time, its parse-time checks, and one real DAG run.

The run is ``dag.test()`` (tasks in-process, a real SQLite metadata database): a TPE sweep of two
rounds of three Python trials, untracked, and the same DAG with the form asking for fewer and
smaller rounds. The trials each round ran are the ones ``suggest_trials`` gives for the seed and
the rounds before (the plan tasks rebuild the sampler from XCom).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_mlops_provider.params import rounds_param, sweep_params, trials_per_round_param
from airflow_mlops_provider.sweeps import adaptive_sweep, suggest_trials, trial_task

SPACE = {
    "x": {"distribution": "float", "low": 0.0, "high": 1.0},
    "y": {"distribution": "int", "low": 0, "high": 10},
    "opt": ["a", "b", "c"],
}
DAG_ID = "mlops_unit_adaptive_tpe"
SEED = 3


def loss_of(x: float, y: int, opt: str) -> float:
    return (x - 0.3) ** 2 + ((y - 7) / 10) ** 2 + (0.0 if opt == "b" else 0.3)


@trial_task
def train(x: float, y: int, opt: str) -> dict:
    """Fails on purpose at y == 0 (the sampler is told so)."""
    if y == 0:
        raise ValueError("y=0 is a failing region")
    return {"loss": loss_of(x, y, opt)}


def _tasks(dag) -> dict[str, tuple[str, list[str]]]:
    """task_id -> (trigger rule, sorted upstream task ids)."""
    return {
        t.task_id: (getattr(t.trigger_rule, "value", t.trigger_rule), sorted(t.upstream_task_ids))
        for t in dag.tasks
    }


# -- parse time: the task groups --------------------------------------------------------------


def test_rounds_are_task_groups_of_a_plan_and_the_mapped_trial_task():
    with DAG("parse", schedule=None) as dag:
        best = adaptive_sweep(train, rounds=3, trials_per_round=4, search_space=SPACE, metric="loss")
    assert best.operator.task_id == "select_best"
    assert _tasks(dag) == {
        "round_1.plan": ("all_done", []),
        "round_1.train": ("all_success", ["round_1.plan"]),
        "round_2.plan": ("all_done", ["round_1.train"]),
        "round_2.train": ("all_success", ["round_2.plan"]),
        "round_3.plan": ("all_done", ["round_1.train", "round_2.train"]),
        "round_3.train": ("all_success", ["round_3.plan"]),
        "select_best": ("all_done", ["round_1.train", "round_2.train", "round_3.train"]),
    }
    assert dag.get_task("round_2.train").is_mapped
    assert not dag.get_task("round_2.plan").is_mapped
    assert dag.task_group.get_child_by_label("round_2").group_id == "round_2"


def test_group_id_prefixes_every_task():
    with DAG("parse", schedule=None) as dag:
        adaptive_sweep(train, rounds=2, trials_per_round=2, group_id="hpo", strategy="random")
    assert sorted(_tasks(dag)) == [
        "hpo.round_1.plan",
        "hpo.round_1.train",
        "hpo.round_2.plan",
        "hpo.round_2.train",
        "hpo.select_best",
    ]
    assert _tasks(dag)["hpo.round_2.plan"][1] == ["hpo.round_1.train"]


def test_container_trials_in_rounds():
    from airflow_mlops_provider.sweeps import container_trials

    with DAG("parse", schedule=None) as dag:
        adaptive_sweep(
            lambda batches: container_trials(
                task_id="fit", batches=batches, runtime="docker", image="python:3.11", command=["train"]
            ),
            rounds=2,
            trials_per_round=3,
        )
    assert sorted(_tasks(dag)) == [
        "round_1.fit",
        "round_1.plan",
        "round_2.fit",
        "round_2.plan",
        "select_best",
    ]
    assert type(dag.get_task("round_1.fit")).__name__ == "MappedOperator"
    assert _tasks(dag)["round_2.plan"][1] == ["round_1.fit"]


def test_two_sweeps_in_one_dag_with_group_ids():
    with DAG("parse", schedule=None) as dag:
        adaptive_sweep(train, rounds=1, trials_per_round=2, group_id="a")
        adaptive_sweep(train, rounds=1, trials_per_round=2, group_id="b")
    assert sorted(_tasks(dag)) == [
        "a.round_1.plan",
        "a.round_1.train",
        "a.select_best",
        "b.round_1.plan",
        "b.round_1.train",
        "b.select_best",
    ]


# -- parse time: bad static arguments ---------------------------------------------------------

COMMON = (
    "['search_space', 'search_space_params', 'strategy', 'metric', 'mode', 'seed', 'resources', "
    "'gpus_per_trial', 'max_parallel_tasks', 'mlflow_conn_id', 'experiment_name', 'tracking', 'cache', "
    "'cache_key', 'cache_failures', 'min_success_ratio']"
)
BAD = [
    ({"rounds": 0}, "rounds must be an integer from 1 to 100, got 0"),
    ({"rounds": 101}, "rounds must be an integer from 1 to 100, got 101"),
    ({"rounds": True}, "rounds must be an integer from 1 to 100, got True"),
    ({"rounds": "3"}, "rounds must be an integer from 1 to 100, got '3'"),
    (
        {"trials_per_round": 0},
        "trials_per_round must be an integer from 1 to 10000, got 0",
    ),
    (
        {"trials_per_round": 10_001},
        "trials_per_round must be an integer from 1 to 10000, got 10001",
    ),
    ({"n_trials": 8}, f"adaptive_sweep got unknown arguments ['n_trials']; it takes {COMMON}"),
    (
        {"strategy": "grid"},
        "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'grid' (grid has no rounds: use plan_sweep)",
    ),
    (
        {"strategy": "bayes", "search_space": SPACE},
        "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'bayes'",
    ),
    (
        {"search_space": {"x": {"distribution": "gaussian", "low": 0, "high": 1}}},
        "search_space['x']: unknown distribution 'gaussian'; expected one of ['choice', 'float', 'int']",
    ),
    (
        {"search_space": {"opt": ["a", "b"], "act": ["x", "y"]}, "strategy": "cmaes"},
        "strategy 'cmaes' samples int and float ranges only, and search_space has only choices ['opt', 'act']; "
        "use strategy='tpe' (or 'random') for this space",
    ),
    (
        {"search_space": {"epochs": 3}},
        "search_space has nothing to search: every entry is a constant ['epochs']; give a range or a choice "
        "of two or more values",
    ),
]
BAD_IDS = [
    "rounds-zero",
    "rounds-over-100",
    "rounds-bool",
    "rounds-text",
    "trials-per-round-zero",
    "trials-per-round-over-max",
    "unknown-kwarg",
    "grid",
    "unknown-strategy",
    "bad-space",
    "cmaes-only-choices",
    "all-constant",
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=BAD_IDS)
def test_bad_static_arguments_are_parse_time_value_errors(override, message):
    kwargs = {"rounds": 2, "trials_per_round": 4, **override}
    with DAG("parse", schedule=None), pytest.raises(ValueError) as err:
        adaptive_sweep(train, **kwargs)
    assert str(err.value) == message


def test_a_templated_space_is_checked_at_run_time_only():
    with DAG("parse", schedule=None) as dag:
        adaptive_sweep(
            train, rounds=1, trials_per_round=2, search_space="{{ params.space }}", strategy="cmaes"
        )
    assert "round_1.plan" in dag.task_dict


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            sweep_params(search_space=SPACE, rounds=5, trials_per_round=4),
            "the DAG param 'rounds' has default 5, more than the 3 this DAG builds; raise the sweep's rounds "
            "or lower the param's",
        ),
        (
            {"rounds": rounds_param(2, maximum=5)},
            "the DAG param 'rounds' has maximum 5, more than the 3 this DAG builds; raise the sweep's rounds "
            "or lower the param's",
        ),
        (
            sweep_params(search_space=SPACE, rounds=3, trials_per_round=8),
            "the DAG param 'trials_per_round' has default 8, more than the 4 this DAG builds; raise the "
            "sweep's trials_per_round or lower the param's",
        ),
        (
            {"trials_per_round": trials_per_round_param(2, maximum=16)},
            "the DAG param 'trials_per_round' has maximum 16, more than the 4 this DAG builds; raise the "
            "sweep's trials_per_round or lower the param's",
        ),
    ],
    ids=["rounds-default", "rounds-maximum", "trials-per-round-default", "trials-per-round-maximum"],
)
def test_a_dag_param_over_what_the_dag_builds_is_refused(params, message):
    with DAG("parse", schedule=None, params=params), pytest.raises(ValueError) as err:
        adaptive_sweep(train, rounds=3, trials_per_round=4)
    assert str(err.value) == message


def test_a_dag_param_over_what_the_dag_builds_is_refused_under_the_dag_decorator():
    from airflow.sdk import dag

    @dag(schedule=None, params=sweep_params(search_space=SPACE, rounds=4, trials_per_round=3))
    def over():
        adaptive_sweep(train, rounds=3, trials_per_round=3)

    with pytest.raises(ValueError, match=re.escape("the DAG param 'rounds' has default 4, more than the 3")):
        over()


def test_dag_params_within_what_the_dag_builds_are_accepted():
    from airflow.sdk import dag

    @dag(
        schedule=None,
        params={
            **sweep_params(search_space=SPACE, rounds=2, trials_per_round=3),
            "rounds": rounds_param(2, maximum=3),
        },
    )
    def within():
        adaptive_sweep(train, rounds=3, trials_per_round=3)

    assert "round_3.plan" in within().task_dict


@pytest.mark.parametrize(
    ("trials", "message"),
    [
        (
            42,
            "trials must be a @trial_task function or a callable taking the batches (e.g. a lambda calling "
            "container_trials), got 42",
        ),
        (
            lambda batches: 42,
            "the trial task for the batches must return a task's output (XComArg), got 42",
        ),
    ],
    ids=["not-callable", "callable-returning-no-output"],
)
def test_the_trial_argument_must_make_a_task(trials, message):
    with DAG("parse", schedule=None), pytest.raises(ValueError) as err:
        adaptive_sweep(trials, rounds=1, trials_per_round=2)
    assert str(err.value) == message


def test_building_staged_sweeps_imports_no_optuna_nor_heavy_library():
    code = """
import sys
from airflow.sdk import DAG
from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import adaptive_sweep, halving, halving_sweep, trial_task

@trial_task
def train(x: float, budget: float) -> dict:
    return {"loss": x}

space = {"x": {"low": 0.0, "high": 1.0}, "opt": ["a", "b"]}
with DAG("a", schedule=None, params=sweep_params(search_space=space, rounds=2, trials_per_round=4)):
    adaptive_sweep(train, rounds=2, trials_per_round=4, strategy="cmaes", search_space=space)
with DAG("h", schedule=None, params=sweep_params(search_space=space, n_trials=9)):
    halving_sweep(train, halving(1, 9, 3), n_trials=9)
heavy = {"optuna", "cmaes", "scipy", "mlflow", "sklearn", "numpy", "pandas", "pyarrow", "feast", "docker",
         "kubernetes"}
print(sorted(heavy & {m.split(".")[0] for m in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- one real DAG run (dag.test) --------------------------------------------------------------

#: What the report task received in each run: select_best's result (dag.test() runs tasks in-process).
_KEPT: dict[str, list[dict]] = {}


def _keep(result: dict) -> None:
    from airflow.sdk import get_current_context

    _KEPT.setdefault(get_current_context()["dag"].dag_id, []).append(result)


def build_tpe_dag():
    from airflow.sdk import dag, task

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        params=sweep_params(search_space=SPACE, strategy="tpe", rounds=2, trials_per_round=3, seed=SEED),
    )
    def tpe_sweep():
        best = adaptive_sweep(train, rounds=2, trials_per_round=3, mlflow_conn_id=None, min_success_ratio=0.3)
        task(_keep, task_id="keep")(best)

    return tpe_sweep()


def run_in_dag_test(build, dag_id: str, module: str, confs: list[dict | None]) -> list:
    """Run the DAG ``build()`` makes with ``dag.test()`` once per conf; return the DAG runs.

    ``dag.test()`` reads the DAG from its bundle: a file in the DAGs folder imports it from ``module``.
    """
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    dag_file.write_text(
        "# airflow DAG (safe-mode discovery needs both words)\n"
        f"from {module} import {build.__name__}\n\ndag = {build.__name__}()\n"
    )
    dag = build()
    try:
        return [dag.test(run_conf=conf) for conf in confs]
    finally:
        dag_file.unlink()


@pytest.fixture(scope="module")
def tpe_runs(airflow_db):
    _KEPT.pop(DAG_ID, None)
    runs = run_in_dag_test(
        build_tpe_dag, DAG_ID, __name__, [None, {"rounds": 1, "trials_per_round": 2, "strategy": "random"}]
    )
    assert [r.state for r in runs] == ["success", "success"]
    full, small = _KEPT[DAG_ID]
    return types.SimpleNamespace(runs=runs, full=full, small=small)


def _expected_rounds(rounds: int, size: int, strategy: str) -> list[list[str]]:
    """The trial ids each round asks, planned directly with the trial function's outcomes."""
    history: list[list[dict]] = []
    for _ in range(rounds):
        trials = suggest_trials(
            SPACE, size, strategy=strategy, seed=SEED, metric="loss", history=history, trials_per_round=size
        )
        records = []
        for t in trials:
            h = t["hparams"]
            if h["y"] == 0:
                records.append({**t, "status": "failed", "error": "ValueError: y=0 is a failing region"})
            else:
                records.append({**t, "status": "success", "metrics": {"loss": loss_of(**h)}})
        history.append(records)
    return [[r["trial_id"] for r in h] for h in history]


def test_each_round_ran_the_trials_the_sampler_asks_for(tpe_runs):
    result = tpe_runs.full
    assert (result["kind"], result["n_stages"], result["n_trials"], result["n_cached"]) == ("rounds", 2, 6, 0)
    by_round: dict[int, list[str]] = {}
    for row in result["leaderboard"]:
        by_round.setdefault(row["round"], []).append(row["trial_id"])
    expected = _expected_rounds(2, 3, "tpe")
    assert {k: sorted(v) for k, v in by_round.items()} == {0: sorted(expected[0]), 1: sorted(expected[1])}


def test_the_leaderboard_ranks_every_round_and_the_best_is_the_lowest_loss(tpe_runs):
    result = tpe_runs.full
    board = result["leaderboard"]
    ok = [r for r in board if r["status"] == "success"]
    assert [r["rank"] for r in ok] == list(range(1, len(ok) + 1))
    losses = [r["metrics"]["loss"] for r in ok]
    assert losses == sorted(losses)
    assert result["best"]["trial_id"] == ok[0]["trial_id"]
    assert result["best"]["metrics"]["loss"] == pytest.approx(loss_of(**result["best"]["hparams"]))
    for row in board:
        assert set(row) >= {"trial_id", "hparams", "round", "status", "rank", "cached"}
        assert row["cached"] is False
        assert row["mlflow_run_id"] is None  # untracked


def test_the_form_may_ask_fewer_and_smaller_rounds(tpe_runs):
    result = tpe_runs.small
    assert (result["n_stages"], result["n_trials"]) == (1, 2)
    assert {r["round"] for r in result["leaderboard"]} == {0}
    assert sorted(r["trial_id"] for r in result["leaderboard"]) == sorted(_expected_rounds(1, 2, "random")[0])


def test_the_round_past_the_asked_ones_planned_nothing(tpe_runs):
    dag_run = tpe_runs.runs[1]
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["round_2.plan"] == "success"
    assert states["round_2.train"] == "skipped"
    assert states["select_best"] == "success"
