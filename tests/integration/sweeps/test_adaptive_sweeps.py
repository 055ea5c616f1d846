"""Issue 15 end to end through `airflow dags test`: a TPE sweep and a halving sweep, on Python and on
Docker container trials, tracked in a real `mlflow server` (one per module).

The DAGs are ``adaptive_dags/adaptive_sweeps.py``: a closed-form objective with its optimum at
``x=0.3, y=7, opt="b"``, failing at ``y == 0``. ``adaptive_python`` and ``adaptive_docker`` each
hold a TPE sweep (group ``tpe``) and a halving sweep (group ``halving``), tracked in their own
experiments, so one DAG run checks both (a DAG run costs ~20 s here). The seeds are fixed (TPE
3 x 6: seed 11; TPE on Docker 2 x 3: seed 13; halving 9 -> 3 -> 1: seed 5; on Docker 4 -> 2 -> 1:
seed 4), chosen so that some trials fail and, for TPE, the last round's median loss is below the
first round's. Each run's trials are also compared with the planning code called directly
(``suggest_trials`` on the same results), so the seeds only make the figures interesting.

Also through `airflow dags test`: a second DAG run on the same ``cache_key`` (every trial from the
cache, told to the sampler as finished), the conf asking for fewer and smaller rounds than the
DAG builds, and a bad conf failing each sweep's first plan before any trial. Rerunning a cleared
round under a real scheduler is ``test_adaptive_scheduled.py``; bad static arguments at parse
time, ``test_adaptive_bad_input.py``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_mlops_provider.sweeps import halving, suggest_trials
from tests.conftest import dags_test
from tests.integration.sweeps.adaptive_dags.adaptive_sweeps import SPACE, loss_of
from tests.integration.sweeps.conftest import SweepRun
from tests.support.airflow_runs import latest_run_id, task_states
from tests.support.docker_events import created_containers
from tests.support.mlflow_server import start_mlflow_server
from tests.support.mlflow_sweeps import leaderboard_of, metric_steps, sweep_runs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "adaptive_dags"
#: How a trial whose container exits 1 fails (after the container's name).
CONTAINER_EXIT_1 = " exited with code 1"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    started = start_mlflow_server(tmp_path_factory.mktemp("adaptive-sweep-mlflow"), timeout=300)
    yield started
    started.stop()


class Sweep:
    """One sweep of a DAG run: its report (result, plans, run id) and where its tasks and runs are."""

    def __init__(self, run: SweepRun, report: dict[str, Any], dag_id: str, group: str | None) -> None:
        self.run = run
        self.report = report
        self.summary: dict[str, Any] = report["summary"]
        self.board: list[dict[str, Any]] = self.summary["leaderboard"]
        self.run_id: str = report["run_id"]
        self.prefix = f"{group}." if group else ""
        self.experiment = f"{dag_id}.{group}" if group else dag_id

    def plan(self, stage: str, k: int) -> dict[str, Any]:
        """The ``sweep_plan`` of stage ``k`` (from 1) of ``stage`` (``round`` or ``rung``)."""
        return self.report["plans"][f"{self.prefix}{stage}_{k}.plan"]

    def planned(self, stage: str, n_stages: int) -> list[list[dict[str, Any]]]:
        """Each stage's planned trials, in order; the sweep has exactly ``n_stages`` plans."""
        assert sorted(self.report["plans"]) == [
            f"{self.prefix}{stage}_{k}.plan" for k in range(1, n_stages + 1)
        ]
        return [self.plan(stage, k)["trials"] for k in range(1, n_stages + 1)]


def _run(
    dag_id: str,
    tmp_path: Path,
    *,
    server: MlflowServer | None = None,
    conf: dict[str, Any] | None = None,
    succeed: bool = True,
) -> tuple[SweepRun, dict[str, Sweep]]:
    """
    One `airflow dags test` run, tracked in ``server`` when given; by default it must succeed.

    :return: The run, and its sweeps by group (``""`` for a sweep outside a group).
    """
    result_dir = tmp_path / f"result-{dag_id}-{time.time_ns()}"
    result_dir.mkdir()
    env = {"SWEEP_RESULT_DIR": str(result_dir)}
    if server is not None:
        env["SWEEP_TRACKED"] = "1"
        env["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": server.url})
    proc = dags_test(dag_id, DAGS, conf=json.dumps(conf) if conf else None, extra_env=env, check=False)
    run = SweepRun(dag_id, proc, result_dir)
    sweeps = {}
    for path in result_dir.glob("*.json"):
        group = path.stem.removeprefix(dag_id).removeprefix(".") or None
        sweeps[group or ""] = Sweep(run, json.loads(path.read_text()), dag_id, group)
    if succeed:
        assert run.state == "success", run.tail()
        assert sweeps, run.tail()
    return run, sweeps


def _loss(row: dict[str, Any]) -> float:
    return row["metrics"]["loss"]


def _ids(trials: list[dict[str, Any]]) -> list[str]:
    return [t["trial_id"] for t in trials]


def _check_rounds(
    sweep: Sweep, *, seed: int, rounds: int, size: int, learns: bool = True
) -> dict[str, dict[str, Any]]:
    """What every TPE sweep shows: its rounds, its replayable plans, failures, the best. Returns rows by id."""
    summary, board = sweep.summary, sweep.board
    assert (summary["kind"], summary["n_stages"], summary["n_trials"]) == ("rounds", rounds, rounds * size)
    assert len({r["trial_id"] for r in board}) == rounds * size
    assert sorted(r["round"] for r in board) == sorted(list(range(rounds)) * size)
    planned = sweep.planned("round", rounds)
    by_id = {r["trial_id"]: r for r in board}
    for index, trials in enumerate(planned):
        plan = sweep.plan("round", index + 1)
        assert (plan["round"], plan["n_rounds"], plan["strategy"]) == (index, rounds, "tpe")
        assert all(t["round"] == index for t in trials)
        assert all(by_id[t["trial_id"]]["round"] == index for t in trials)
        # the planning code, called directly on the same results, asks the same trials
        history = [[by_id[t["trial_id"]] for t in earlier] for earlier in planned[:index]]
        direct = suggest_trials(
            SPACE, size, strategy="tpe", seed=seed, metric="loss", history=history, trials_per_round=size
        )
        assert _ids(direct) == _ids(trials), f"round {index + 1}"
    failed = {tid for tid, r in by_id.items() if r["status"] == "failed"}
    assert failed, "the seed was chosen so that some trials land in the failing region y == 0"
    assert failed == {tid for tid, r in by_id.items() if r["hparams"]["y"] == 0}
    assert all(by_id[tid]["rank"] is None for tid in failed)
    ok = [r for r in board if r["status"] == "success"]
    assert summary["n_succeeded"] == len(ok) == rounds * size - len(failed)
    for row in ok:
        assert _loss(row) == pytest.approx(loss_of(**row["hparams"]))
    assert summary["best"]["trial_id"] == min(ok, key=_loss)["trial_id"] == board[0]["trial_id"]
    # the sampler learns: the last round's trials sit nearer the optimum than the first round's
    # (shown on 3 rounds of 6; 2 rounds of 3 trials are too few to tell, and the check above,
    # that each round is what the sampler asks given the earlier results, holds for them)
    if learns:
        median = [statistics.median(_loss(r) for r in ok if r["round"] == k) for k in range(rounds)]
        assert median[-1] < median[0], median
    return by_id


def _check_tracked_rounds(server: MlflowServer, sweep: Sweep, tmp_path: Path) -> None:
    """One parent run, one child run per trial of every round, and the leaderboard on the parent."""
    by_id = {r["trial_id"]: r for r in sweep.board}
    parents, children = sweep_runs(server.url, sweep.experiment, sweep.run_id)
    assert len(parents) == 1, [p.data.tags for p in parents]
    parent = parents[0]
    assert parent.data.tags["mlops.sweep_task"] == f"{sweep.prefix}round_1.plan"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_loss"] == _loss(sweep.summary["best"])
    assert len(children) == len(by_id)
    assert sorted(c.data.tags["mlops.trial_id"] for c in children) == sorted(by_id)
    for child in children:
        row = by_id[child.data.tags["mlops.trial_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["airflow.task_id"] == f"{sweep.prefix}round_{row['round'] + 1}.train"
        assert child.info.status == ("FINISHED" if row["status"] == "success" else "FAILED")
        if row["status"] == "success":
            assert child.data.metrics["loss"] == _loss(row)
    board = leaderboard_of(server.url, parent.info.run_id, tmp_path)
    assert (board["kind"], board["n_stages"]) == ("rounds", sweep.summary["n_stages"])
    assert {r["trial_id"]: r["round"] for r in board["leaderboard"]} == {
        t: r["round"] for t, r in by_id.items()
    }
    assert {r["trial_id"]: r["status"] for r in board["leaderboard"]} == {
        t: r["status"] for t, r in by_id.items()
    }


def _check_rungs(sweep: Sweep, *, n: int, eta: int, budgets: list[int]) -> list[list[dict[str, Any]]]:
    """What every halving sweep shows: rung sizes, budgets, promotions by loss, the leaderboard order."""
    schedule = halving(min_budget=budgets[0], max_budget=budgets[-1], eta=eta)
    assert schedule.budgets == budgets
    summary, board = sweep.summary, sweep.board
    planned = sweep.planned("rung", len(budgets))
    assert [len(trials) for trials in planned] == schedule.sizes(n)
    for index, trials in enumerate(planned):
        plan = sweep.plan("rung", index + 1)
        assert (plan["rung"], plan["n_rungs"], plan["budget"]) == (index, len(budgets), budgets[index])
        assert all((t["rung"], t["budget"]) == (index, budgets[index]) for t in trials)
    by_id = {r["trial_id"]: r for r in board}
    assert len(by_id) == n == summary["n_trials"]
    # each rung promotes the best of the rung before, by its loss at that rung; same trial id, same hparams
    for index in range(1, len(budgets)):
        before = [
            (h["loss"], tid)
            for tid, r in by_id.items()
            for h in r["rungs"]
            if h["rung"] == index - 1 and h["status"] == "success"
        ]
        best = [tid for _, tid in sorted(before)[: len(planned[index])]]
        assert _ids(planned[index]) == best, f"rung {index + 1}"
        assert all(t["hparams"] == by_id[t["trial_id"]]["hparams"] for t in planned[index])
    # the leaderboard: higher rungs first; each row its last rung, with every rung's loss at its budget
    top = len(budgets) - 1
    assert (board[0]["rung"], board[0]["budget"], board[0]["rank"]) == (top, budgets[-1], 1)
    assert summary["best"]["trial_id"] == board[0]["trial_id"] == planned[-1][0]["trial_id"]
    ok = [r for r in board if r["status"] == "success"]
    assert [r["rung"] for r in ok] == sorted((r["rung"] for r in ok), reverse=True)
    for row in board:
        assert [h["rung"] for h in row["rungs"]] == list(range(row["rung"] + 1))
        assert [h["budget"] for h in row["rungs"]] == budgets[: row["rung"] + 1]
        assert row["budget"] == budgets[row["rung"]]
        for h in row["rungs"]:
            if h["status"] == "success":
                assert h["loss"] == pytest.approx(loss_of(**row["hparams"], budget=h["budget"]))
    failed = [r for r in board if r["status"] == "failed"]
    assert failed, "the seed was chosen so that a first-rung trial lands in the failing region y == 0"
    assert all((r["rung"], r["rank"], r["hparams"]["y"]) == (0, None, 0) for r in failed)
    assert board[-len(failed) :] == failed
    assert summary["budget_spent"] == sum(len(t) * b for t, b in zip(planned, budgets))
    assert summary["budget_spent"] == schedule.total_budget(n)
    assert (summary["kind"], summary["n_stages"]) == ("rungs", len(budgets))
    return planned


def _check_tracked_rungs(server: MlflowServer, sweep: Sweep, budgets: list[int], tmp_path: Path) -> None:
    """One child run per trial over all its rungs: its loss and budget per rung as MLflow steps."""
    by_id = {r["trial_id"]: r for r in sweep.board}
    parents, children = sweep_runs(server.url, sweep.experiment, sweep.run_id)
    assert len(parents) == 1, [p.data.tags for p in parents]
    assert parents[0].data.tags["mlops.sweep_task"] == f"{sweep.prefix}rung_1.plan"
    assert len(children) == len(by_id)
    assert sorted(c.data.tags["mlops.trial_id"] for c in children) == sorted(by_id)
    for child in children:
        row = by_id[child.data.tags["mlops.trial_id"]]
        assert row["mlflow_run_id"] == child.info.run_id
        rungs = row["rungs"]
        losses = [(h["rung"], h["loss"]) for h in rungs if h["status"] == "success"]
        assert metric_steps(server.url, child.info.run_id, "loss") == losses
        assert metric_steps(server.url, child.info.run_id, "mlops.budget") == [
            (h["rung"], float(h["budget"])) for h in rungs
        ]
        for h in rungs:
            outcome = json.loads(child.data.tags[f"mlops.rung.{h['rung']}"])
            assert (outcome["budget"], outcome["status"]) == (h["budget"], h["status"])
    best = by_id[sweep.summary["best"]["trial_id"]]
    assert metric_steps(server.url, best["mlflow_run_id"], "mlops.budget") == [
        (k, float(b)) for k, b in enumerate(budgets)
    ]
    assert [step for step, _ in metric_steps(server.url, best["mlflow_run_id"], "loss")] == list(
        range(len(budgets))
    )
    board = leaderboard_of(server.url, parents[0].info.run_id, tmp_path)
    assert (board["kind"], board["n_stages"], board["budget_spent"]) == (
        "rungs",
        len(budgets),
        sweep.summary["budget_spent"],
    )
    assert [(r["trial_id"], r["rung"], r["budget"], r["rungs"]) for r in board["leaderboard"]] == [
        (r["trial_id"], r["rung"], r["budget"], r["rungs"]) for r in sweep.board
    ]


# --- Python trials -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_run(server, airflow_db, tmp_path_factory) -> tuple[SweepRun, dict[str, Sweep]]:
    """``adaptive_python`` (TPE and halving on Python trials), tracked, on the cache key ``v1``."""
    return _run("adaptive_python", tmp_path_factory.mktemp("python"), server=server, conf={"cache_key": "v1"})


def test_tpe_sweep_of_python_trials_runs_three_rounds_tracked(server, python_run, tmp_path):
    run, sweeps = python_run
    sweep = sweeps["tpe"]
    _check_rounds(sweep, seed=11, rounds=3, size=6)
    _check_tracked_rounds(server, sweep, tmp_path)
    assert "the tpe sampler was told 12 results" in run.output
    failed = [r for r in sweep.board if r["status"] == "failed"]
    assert all(r["error"] == "ValueError: y=0 is a failing region" for r in failed)
    assert sweep.summary["n_cached"] == 0


def test_halving_sweep_of_python_trials_promotes_9_3_1_tracked(server, python_run, tmp_path):
    budgets = [1, 3, 9]
    sweep = python_run[1]["halving"]
    planned = _check_rungs(sweep, n=9, eta=3, budgets=budgets)
    assert [len(p) for p in planned] == [9, 3, 1]
    _check_tracked_rungs(server, sweep, budgets, tmp_path)
    # the trial function received its rung's budget as an argument
    for row in sweep.board:
        if row["status"] == "success":
            assert row["outputs"] == {"budget": row["budget"]}


def test_a_second_run_on_the_same_cache_key_is_served_and_told_from_the_cache(server, python_run, tmp_path):
    first = python_run[1]
    run, sweeps = _run("adaptive_python", tmp_path, server=server, conf={"cache_key": "v1"})
    states = task_states("adaptive_python", sweeps["tpe"].run_id)
    for group, stage, n_stages in (("tpe", "round", 3), ("halving", "rung", 3)):
        sweep, earlier = sweeps[group], first[group]
        planned, planned_before = sweep.planned(stage, n_stages), earlier.planned(stage, n_stages)
        for k in range(1, n_stages + 1):
            assert _ids(planned[k - 1]) == _ids(planned_before[k - 1]), f"{group} {stage} {k}"
            assert [r["trial_id"] for r in sweep.plan(stage, k)["cached"]] == _ids(planned[k - 1])
            assert states[(f"{group}.{stage}_{k}.train", -1)] == ("skipped", 0)  # nothing left to run
        assert sweep.summary["n_cached"] == len(sweep.board)
        assert all(r["cached"] for r in sweep.board)
        assert [(r["trial_id"], r["status"], r.get("metrics"), r.get("rungs")) for r in sweep.board] == [
            (r["trial_id"], r["status"], r.get("metrics"), r.get("rungs")) for r in earlier.board
        ]
        parents, children = sweep_runs(server.url, sweep.experiment, sweep.run_id)
        assert (len(parents), len(children)) == (1, 0)  # the run's own sweep run; no trial run
    assert sweeps["halving"].summary["budget_spent"] == 0
    assert run.output.count("Planned 6 trials: 6 cached") == 3
    # The cached trials were told as finished: told as failed, TPE would model nothing and ask
    # other trials in round 3 (round 2 is still TPE's random start-up, so it would not tell).
    records = {r["trial_id"]: r for r in sweeps["tpe"].board}
    planned = sweeps["tpe"].planned("round", 3)
    as_failed = [[{**records[t["trial_id"]], "status": "failed"} for t in trials] for trials in planned[:2]]
    other = suggest_trials(SPACE, 6, strategy="tpe", seed=11, metric="loss", history=as_failed)
    assert _ids(other) != _ids(planned[2])


def test_the_conf_chooses_fewer_and_smaller_rounds_than_the_dag_builds(tmp_path, airflow_db):
    run, sweeps = _run("adaptive_tpe", tmp_path, conf={"rounds": 2, "trials_per_round": 3})
    sweep = sweeps[""]
    states = task_states("adaptive_tpe", sweep.run_id)
    for k in (1, 2):
        assert sorted((m, s) for (t, m), s in states.items() if t == f"round_{k}.train") == [
            (m, ("success", 1)) for m in range(3)
        ]
    assert states[("round_3.plan", -1)] == ("success", 1)
    assert states[("round_3.train", -1)] == ("skipped", 0)
    plans = [sweep.plan("round", k) for k in (1, 2, 3)]
    assert [len(p["trials"]) for p in plans] == [3, 3, 0]
    assert [p["n_rounds"] for p in plans] == [2, 2, 2]
    assert plans[2]["skipped"] is True
    assert (sweep.summary["n_trials"], sweep.summary["n_stages"], sweep.summary["kind"]) == (6, 2, "rounds")
    assert sorted(r["round"] for r in sweep.board) == [0, 0, 0, 1, 1, 1]
    by_id = {r["trial_id"]: r for r in sweep.board}
    history = [[by_id[t["trial_id"]] for t in plans[0]["trials"]]]
    direct = suggest_trials(SPACE, 3, strategy="tpe", seed=11, metric="loss", history=history)
    assert _ids(direct) == _ids(plans[1]["trials"])
    assert "Round 3 of the 3 built: skipped, this run asked for 2" in run.output


#: What each sweep of ``adaptive_bad_conf`` fails with, given one conf (its params have no schema):
#: each sweep's plan checks the rounds, then the trials per round, then the strategy and space.
BAD_CONF = {
    "rounds": 2,
    "trials_per_round": 4,
    "strategy": "bogus",
    "cmaes_space": {"opt": ["a", "b"], "k": [1, 2]},
}
BAD_CONF_MESSAGES = {
    "short": "rounds must be an integer from 1 to 1 (the most this DAG builds), got 2",
    "narrow": "trials_per_round must be an integer from 1 to 3 (the most this DAG builds), got 4",
    "wide": "strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'bogus'",
    "cmaes": "strategy 'cmaes' samples int and float ranges only, and search_space has only "
    "choices ['opt', 'k']; use strategy='tpe' (or 'random') for this space",
}


def test_a_bad_conf_fails_each_sweep_at_its_first_plan_before_any_trial(tmp_path, airflow_db):
    run, sweeps = _run("adaptive_bad_conf", tmp_path, conf=BAD_CONF, succeed=False)
    assert run.state == "failed", run.tail()
    assert sweeps == {}
    states = task_states("adaptive_bad_conf", latest_run_id("adaptive_bad_conf"))
    for group, message in BAD_CONF_MESSAGES.items():
        assert f"AirflowFailException: {message}" in run.output, group
        # failed at the first try, though every task of the DAG has a retry
        assert states[(f"{group}.round_1.plan", -1)] == ("failed", 1)
        trials = [
            state
            for (task_id, _), state in states.items()
            if task_id.startswith(f"{group}.") and task_id.endswith(".train")
        ]
        assert trials, states
        assert all(state == ("upstream_failed", 0) for state in trials), states
        assert states[(f"{group}.select_best", -1)] == ("failed", 1)


# --- Docker container trials -------------------------------------------------------------------

DOCKER = "adaptive_docker"


@pytest.fixture(scope="module")
def docker_run(server, airflow_db, base_image, tmp_path_factory):
    """``adaptive_docker`` (TPE and halving on container trials), tracked; and the engine's window."""
    since = time.time()
    run, sweeps = _run(DOCKER, tmp_path_factory.mktemp("docker"), server=server)
    return run, sweeps, (since, time.time())


def _created(window: tuple[float, float], trial_id: str) -> list[str]:
    labels = {"airflow-mlops.dag_id": DOCKER, "airflow-mlops.trial_id": trial_id}
    return created_containers(*window, **labels)


def _containers() -> list[str]:
    args = ["docker", "ps", "-a", "-q", "--filter", f"label=airflow-mlops.dag_id={DOCKER}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.docker
def test_tpe_sweep_of_container_trials_runs_two_rounds_tracked(server, docker_run, tmp_path):
    _, sweeps, window = docker_run
    sweep = sweeps["tpe"]
    by_id = _check_rounds(sweep, seed=13, rounds=2, size=3, learns=False)
    _check_tracked_rounds(server, sweep, tmp_path)
    assert _containers() == []  # all removed
    for row in by_id.values():
        assert len(_created(window, row["trial_id"])) == 1  # one container per trial
        if row["status"] == "failed":
            assert CONTAINER_EXIT_1 in row["error"], row
            assert any("y=0 is a failing region" in line for line in row["tail"]), row
            continue
        outputs = row["outputs"]
        assert outputs["argv"] == [f"--round={row['round']}"]  # {{ trial.round }} rendered
        assert outputs["budget_env"] is None  # rounds have no budget
        assert (outputs["trial"]["trial_id"], outputs["trial"]["round"]) == (row["trial_id"], row["round"])
        assert outputs["trial"]["hparams"] == row["hparams"]


@pytest.mark.docker
def test_halving_sweep_of_container_trials_promotes_4_2_1_tracked(server, docker_run, tmp_path):
    _, sweeps, window = docker_run
    budgets = [1, 2, 4]
    sweep = sweeps["halving"]
    planned = _check_rungs(sweep, n=4, eta=2, budgets=budgets)
    assert [len(p) for p in planned] == [4, 2, 1]
    _check_tracked_rungs(server, sweep, budgets, tmp_path)
    assert _containers() == []  # all removed
    for row in sweep.board:
        assert len(_created(window, row["trial_id"])) == row["rung"] + 1  # one container per rung
        if row["status"] == "failed":
            assert CONTAINER_EXIT_1 in row["error"], row
            continue
        # the last rung's container got its budget in $MLOPS_BUDGET, {{ trial.budget }} and $MLOPS_TRIAL
        outputs = row["outputs"]
        assert outputs["budget_env"] == str(row["budget"])
        assert outputs["argv"] == [f"--budget={row['budget']}"]
        assert (outputs["trial"]["rung"], outputs["trial"]["budget"]) == (row["rung"], row["budget"])
        assert outputs["trial"]["trial_id"] == row["trial_id"]
