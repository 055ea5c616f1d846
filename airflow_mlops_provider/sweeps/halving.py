"""Successive halving: run many trials on a small budget, promote the best to ever larger ones.

::

    @trial_task
    def train(lr: float, depth: int, budget: int) -> dict:  # budget: epochs, steps, rows...
        ...


    @dag(params=sweep_params(search_space=SPACE, n_trials=27))
    def halving_sweep_dag():
        halving_sweep(train, halving(min_budget=1, max_budget=27, eta=3), n_trials=27)

The first rung runs ``n`` trials at ``min_budget``; each later rung promotes the best ``1/eta``
of the one before to ``eta`` times its budget, the last rung running at ``max_budget``. Rungs are
task groups ``rung_1`` ... fixed when the DAG is parsed, each a ``plan`` task and the trial task.
A trial gets its ``budget`` as an argument (Python trials that name it) or ``$MLOPS_BUDGET``
(containers; also ``{{ trial.budget }}``). A promoted trial keeps its ``trial_id``: in MLflow it
is one run with its metric per rung (the rung is the MLflow step).

With a checkpoint (``trial_task(checkpoint=...)``, ``container_trials(checkpoint=...)`` or
``[mlops] checkpoint_uri``) a promoted trial resumes: its checkpoint is kept per ``trial_id``,
so the next rung restores what the previous rung left in ``$MLOPS_CHECKPOINT_DIR`` and trains on
up to its larger budget (see :mod:`airflow_mlops_provider.sweeps.checkpoints`). Without one it
starts over at its larger budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import SweepError
from airflow_mlops_provider.sweeps.select import select_best
from airflow_mlops_provider.sweeps.space import _round
from airflow_mlops_provider.sweeps.staged_select import select_best_of_stages
from airflow_mlops_provider.sweeps.stages import (
    COMMON_ARGS,
    PLAN_TASK_ID,
    build_stages,
    check_count,
    check_dag_param,
    plan_stage,
    resolve,
    run_count,
    stage_plans,
    stage_records,
    trial_resources,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.sdk import XComArg

__all__ = ["Halving", "halving", "halving_sweep", "plan_rung", "promote", "rank_rungs"]

log = logging.getLogger(__name__)


def _positive(name: str, value: Any) -> float:
    # The chained comparison, not math.isfinite: an int too large for a float overflows that.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= sys.float_info.max:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Halving:
    """
    A successive-halving schedule: the rungs' budgets and how many trials each keeps.

    :param min_budget: The first rung's budget (a positive number: epochs, steps, rows...).
    :param max_budget: The last rung's budget, at least ``min_budget * eta``.
    :param eta: The promotion factor (>= 2): each rung keeps the best ``1/eta`` and gives them
        ``eta`` times the budget.
    """

    min_budget: float
    max_budget: float
    eta: float = 3

    def __post_init__(self) -> None:
        _positive("min_budget", self.min_budget)
        _positive("max_budget", self.max_budget)
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not self.eta >= 2:
            raise ValueError(f"eta must be a number >= 2, got {self.eta!r}")
        if self.min_budget >= self.max_budget:
            raise ValueError(
                f"min_budget must be less than max_budget, got min_budget={self.min_budget!r}, "
                f"max_budget={self.max_budget!r}"
            )
        if not math.isfinite(self.max_budget / self.min_budget):
            raise ValueError(
                f"max_budget / min_budget must be a finite number, got min_budget={self.min_budget!r}, "
                f"max_budget={self.max_budget!r}"
            )
        if self.min_budget * self.eta > self.max_budget * (1 + 1e-9):
            raise ValueError(
                f"max_budget must be at least min_budget * eta = {self.min_budget * self.eta!r} for one "
                f"promotion, got max_budget={self.max_budget!r}"
            )

    @property
    def budgets(self) -> list[float]:
        """Each rung's budget: ``min_budget * eta**k`` while below ``max_budget``, then ``max_budget``."""
        steps = int(math.floor(math.log(self.max_budget / self.min_budget) / math.log(self.eta) + 1e-9))
        whole = all(isinstance(v, int) for v in (self.min_budget, self.max_budget, self.eta))
        budgets: list[float] = []
        for k in range(steps):
            value = self.min_budget * self.eta**k
            budgets.append(int(value) if whole else _round(float(value)))
        budgets.append(self.max_budget)
        return budgets

    def sizes(self, n: int) -> list[int]:
        """How many trials each rung runs when the first runs ``n``: ``floor(n / eta**k)``, at least 1."""
        sizes = [n]
        for _ in self.budgets[1:]:
            sizes.append(max(1, int(math.floor(sizes[-1] / self.eta + 1e-9))))
        return sizes

    def total_budget(self, n: int) -> float:
        """The budget all rungs spend when every trial succeeds: ``sum(size * budget)``."""
        return sum(size * budget for size, budget in zip(self.sizes(n), self.budgets))


def halving(min_budget: float, max_budget: float, eta: float = 3) -> Halving:
    """Return a successive-halving schedule; raises ``ValueError`` (parse time) on bad budgets or ``eta``."""
    return Halving(min_budget=min_budget, max_budget=max_budget, eta=eta)


def _sign(mode: str) -> float:
    return 1.0 if mode == "min" else -1.0


def promote(
    records: Sequence[Mapping[str, Any]], n_keep: int, *, metric: str, mode: str
) -> list[dict[str, Any]]:
    """
    Return the trials of the ``n_keep`` best successful records (ties broken by trial id).

    :param records: One rung's records.
    :param n_keep: How many to promote.
    :param metric: The metric that ranks them.
    :param mode: ``"min"`` or ``"max"``.
    """
    scored = []
    for record in records:
        value = (record.get("metrics") or {}).get(metric) if record.get("status") == "success" else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            scored.append((_sign(mode) * float(value), str(record.get("trial_id")), record))
    scored.sort(key=lambda item: (item[0], item[1]))
    keep = ("trial_id", "hparams", "resources")
    return [{k: r[k] for k in keep if k in r} for _, _, r in scored[:n_keep]]


def rank_rungs(
    stages: Sequence[Sequence[Mapping[str, Any]]], *, metric: str, mode: str, min_success_ratio: float
) -> dict[str, Any]:
    """
    Return the best trial and the leaderboard of a halving sweep (see ``select_best_of_stages``).

    :raises SweepError: when too few of the first rung's trials succeeded.
    """
    if not stages or not stages[0]:
        raise SweepError("the halving sweep has no trial results to select from")
    first = select_best(stages[0], metric=metric, mode=mode, min_success_ratio=min_success_ratio)
    history: dict[str, list[dict[str, Any]]] = {}
    last: dict[str, dict[str, Any]] = {}
    for stage in stages:
        for record in stage:
            trial_id = str(record.get("trial_id"))
            value = (record.get("metrics") or {}).get(metric) if record.get("status") == "success" else None
            history.setdefault(trial_id, []).append(
                {
                    "rung": record.get("rung"),
                    "budget": record.get("budget"),
                    "status": record.get("status"),
                    metric: value,
                }
            )
            last[trial_id] = dict(record)
    leaderboard: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for rung in sorted({r.get("rung", 0) for r in last.values()}, reverse=True):
        at_rung = [r for r in last.values() if r.get("rung", 0) == rung]
        ok = [r for r in at_rung if r.get("status") == "success"]
        if ok:
            ranked = select_best(ok, metric=metric, mode=mode, min_success_ratio=0)["leaderboard"]
            leaderboard.extend(r for r in ranked if r.get("rank") is not None)
            failed.extend(r for r in ranked if r.get("rank") is None)
        failed.extend(r for r in at_rung if r.get("status") != "success")
    if not leaderboard:
        raise SweepError("no trial of the halving sweep succeeded")
    board = []
    for rank, record in enumerate([*leaderboard, *failed], start=1):
        row = {**record, "rank": rank if record.get("status") == "success" else None}
        row["rungs"] = history[str(record.get("trial_id"))]
        board.append(row)
    return {
        "best": board[0],
        "leaderboard": board,
        "metric": metric,
        "mode": mode,
        "n_trials": first["n_trials"],
        "n_succeeded": first["n_succeeded"],
        "n_failed": first["n_failed"],
        "budget_spent": sum(float(r.get("budget") or 0) for s in stages for r in s if not r.get("cached")),
    }


@task(trigger_rule="all_done")
def plan_rung(
    rung_index: int, plan_task_ids: Sequence[str], previous: Sequence[Any], sweep: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """
    Plan one rung: draw the first rung's trials, or promote the best of the rung before.

    :param rung_index: This rung, from 0.
    :param plan_task_ids: The plan task of every rung.
    :param previous: The trial tasks' outputs of the earlier rungs.
    :param sweep: The sweep's static settings (see :func:`halving_sweep`).
    """
    from airflow_mlops_provider.sweeps.plan import planned_trials
    from airflow_mlops_provider.sweeps.planning import pick

    context = get_current_context()
    settings = resolve(sweep, context)
    params = settings["params"]
    schedule = Halving(**sweep["halving"])
    budgets = schedule.budgets
    n = run_count(
        "n_trials",
        pick(None, params, "n_trials", sweep["n_trials"]),
        sweep.get("max_trials") or 0,
        built=False,
    )
    strategy = pick(sweep.get("strategy"), params, "strategy", "random")
    if strategy not in ("random", "grid"):
        raise AirflowFailException(
            f"the first rung draws its trials with 'random' or 'grid', got strategy={strategy!r}"
        )
    budget = budgets[rung_index]
    extra = {"rung": rung_index, "n_rungs": len(budgets), "budget": budget}
    logged = {
        "search_space": settings["search_space"],
        "strategy": strategy,
        "n_trials": n,
        "seed": settings["seed"],
        "halving": dict(sweep["halving"]),
        "metric": settings["metric"],
        "mode": settings["mode"],
        "cache": settings["cache"],
        "cache_key": settings["cache_key"][:250],
    }
    if rung_index == 0:
        try:
            drawn = planned_trials(
                settings["search_space"],
                strategy=strategy,
                n_trials=n if strategy == "random" else None,
                seed=settings["seed"],
                resources=trial_resources(sweep, settings),
            )
        except ValueError as err:
            raise AirflowFailException(str(err)) from err
    else:
        plans = stage_plans(context, plan_task_ids, rung_index)
        before = stage_records(plans[-1], previous[-1])
        n_keep = schedule.sizes(len(plans[0].get("trials") or []))[rung_index]
        drawn = promote(before, n_keep, metric=settings["metric"], mode=settings["mode"])
        log.info(
            "Rung %d/%d: promoting the best %d of %d trials of rung %d (%d succeeded) to budget %s",
            rung_index + 1,
            len(budgets),
            len(drawn),
            len(before),
            rung_index,
            sum(1 for r in before if r.get("status") == "success"),
            budget,
        )
    trials = [{**t, "rung": rung_index, "budget": budget} for t in drawn]
    return plan_stage(
        context, sweep, settings, trials, sweep_task=plan_task_ids[0], extra=extra, logged=logged
    )


def halving_sweep(
    trials: Any,
    schedule: Halving,
    *,
    n_trials: int,
    max_trials: int | None = None,
    group_id: str | None = None,
    delete_checkpoints: str | None = None,
    checkpoint: str | None = None,
    checkpoint_conn_id: str | None = None,
    **kwargs: Any,
) -> XComArg:
    """
    Build a successive-halving sweep in the DAG being defined; return ``select_best``'s output.

    :param trials: A ``@trial_task`` function (naming a ``budget`` argument), or a callable taking
        the batches and returning the mapped trial task's output (containers read ``$MLOPS_BUDGET``).
    :param schedule: The rungs, from :func:`halving`.
    :param n_trials: Trials in the first rung (drawn from the space: ``strategy`` random, or
        grid), unless the DAG param ``n_trials`` (the form) says otherwise.
    :param max_trials: Most first-rung trials a run may ask for (default: the form's maximum);
        a DAG param ``n_trials`` whose default is over it is refused at parse time.
    :param group_id: An outer task group around the rungs, or None.
    :param delete_checkpoints: ``"losers"`` or ``"all"``: the selection deletes those trials'
        checkpoints; None keeps them.
    :param checkpoint: Where the trials' checkpoints are, for ``delete_checkpoints``: default the
        ``@trial_task``'s ``checkpoint``, else ``[mlops] checkpoint_uri`` (give it for container
        trials that set their own).
    :param checkpoint_conn_id: Its ``aws`` connection; default the ``@trial_task``'s.
    :param kwargs: As for :func:`~airflow_mlops_provider.sweeps.rounds.adaptive_sweep`.
    :raises ValueError: at parse time, on a bad schedule or static argument.
    """
    from airflow_mlops_provider.sweeps.checkpoints import check_delete_checkpoints

    check_delete_checkpoints(delete_checkpoints)
    trial_options = getattr(trials, "checkpoint_options", None)
    if checkpoint is None and trial_options is not None:
        checkpoint = trial_options.checkpoint
    if checkpoint_conn_id is None and trial_options is not None:
        checkpoint_conn_id = trial_options.conn_id
    if not isinstance(schedule, Halving):
        raise ValueError(f"schedule must be halving(min_budget, max_budget, eta), got {schedule!r}")
    check_count("n_trials", n_trials)
    if max_trials is not None:
        check_count("max_trials", max_trials)
        check_count("n_trials", n_trials, max_trials, built=False)
    unknown = sorted(set(kwargs) - set(COMMON_ARGS))
    if unknown:
        raise ValueError(f"halving_sweep got unknown arguments {unknown}; it takes {list(COMMON_ARGS)}")
    if kwargs.get("strategy") not in (None, "random", "grid"):
        raise ValueError(
            f"the first rung draws its trials with 'random' or 'grid', got strategy={kwargs['strategy']!r}"
        )
    space = kwargs.get("search_space")
    if space is not None and "{{" not in str(space):
        from airflow_mlops_provider.sweeps.space import parse_search_space

        parse_search_space(space)
    sweep: dict[str, Any] = {
        **kwargs,
        "halving": dataclasses.asdict(schedule),
        "n_trials": n_trials,
        "max_trials": max_trials,
        "kind": "rungs",
    }

    def plan(index: int, plan_ids: list[str], previous: list[Any]) -> Any:
        out = plan_rung.override(task_id=PLAN_TASK_ID)(index, plan_ids, previous, sweep)
        if index == 0 and max_trials is not None:
            check_dag_param(getattr(out, "operator", None), "n_trials", max_trials, default_only=True)
        return out

    def select(plan_ids: list[str], results: list[Any]) -> Any:
        return select_best_of_stages.override(task_id="select_best")(
            results,
            plan_ids,
            kind="rungs",
            min_success_ratio=kwargs.get("min_success_ratio"),
            delete_checkpoints=delete_checkpoints,
            checkpoint=checkpoint,
            checkpoint_conn_id=checkpoint_conn_id,
        )

    best, _ = build_stages(
        trials=trials,
        n_stages=len(schedule.budgets),
        prefix="rung",
        plan=plan,
        select=select,
        group_id=group_id,
    )
    return best
