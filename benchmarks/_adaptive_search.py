"""The searches the adaptive-sweep benchmark compares, run through the provider's planning code.

Not a benchmark itself. Each search calls what the DAG's plan tasks call, round by round or rung
by rung, and feeds back records ``{**trial, "status": "success", "metrics": {"loss": value}}``:

- :func:`rounds_search`: ``suggest_trials`` (adaptive_sweep's ``round_k.plan``), any strategy;
- :func:`random_draw`: ``trials_from_random`` (plan_sweep's random draw, and halving's first rung);
- :func:`halving_search`: ``trials_from_random`` then ``promote`` (halving_sweep's ``rung_k.plan``).

Every value is minimised. The statistics helpers treat "never reached" as infinity.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.sweeps import promote, suggest_trials, trials_from_random

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_mlops_provider.sweeps import Halving

METRIC = "loss"


@dataclass
class Problem:
    """
    One objective: its search space, its value at a trial (full budget), and at a budget.

    :param name: For the tables.
    :param space: The search space, in the project's format.
    :param evaluate: ``evaluate(trial) -> value`` at the full budget.
    :param at_budget: ``at_budget(trial, budget) -> value``, for successive halving.
    :param note: One line on the objective (optimum, what the metric is).
    """

    name: str
    space: Mapping[str, Any]
    evaluate: Callable[[Mapping[str, Any]], float]
    at_budget: Callable[[Mapping[str, Any], float], float] | None = None
    note: str = ""


@dataclass
class Search:
    """The values a search saw, in the order its trials were asked, and its trials per stage."""

    values: list[float] = field(default_factory=list)
    stages: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.values)

    def best_record(self) -> dict[str, Any]:
        """The best record of every stage (ties broken by trial id, as ``select_best`` does)."""
        records = [r for stage in self.stages for r in stage]
        return min(records, key=lambda r: (r["metrics"][METRIC], str(r["trial_id"])))


def _record(trial: Mapping[str, Any], value: float) -> dict[str, Any]:
    return {**trial, "status": "success", "metrics": {METRIC: value}}


def rounds_search(problem: Problem, strategy: str, seed: int, rounds: int, size: int) -> Search:
    """``rounds`` rounds of ``size`` trials asked of ``suggest_trials`` with ``strategy`` and ``seed``."""
    search = Search()
    for _ in range(rounds):
        trials = suggest_trials(
            problem.space,
            size,
            strategy=strategy,
            seed=seed,
            metric=METRIC,
            mode="min",
            history=search.stages,
            trials_per_round=size,
        )
        records = []
        for trial in trials:
            value = problem.evaluate(trial)
            search.values.append(value)
            records.append(_record(trial, value))
        search.stages.append(records)
    return search


def random_draw(problem: Problem, n: int, seed: int) -> Search:
    """``n`` trials of ``trials_from_random`` (plan_sweep's random strategy), at the full budget."""
    records = [_record(t, problem.evaluate(t)) for t in trials_from_random(problem.space, n, seed)]
    return Search(values=[r["metrics"][METRIC] for r in records], stages=[records])


@dataclass
class HalvingRun:
    """One successive-halving run: its best top-rung record, the budget it spent, its stages."""

    best: dict[str, Any]
    spent: float
    stages: list[list[dict[str, Any]]]

    @property
    def value(self) -> float:
        return float(self.best["metrics"][METRIC])


def halving_search(problem: Problem, schedule: Halving, n: int, seed: int) -> HalvingRun:
    """
    Run halving_sweep's rungs directly: ``n`` random trials at the first budget, then promote.

    Rung ``k`` keeps ``schedule.sizes(n)[k]`` of rung ``k-1`` with ``promote`` (ties by trial id),
    as ``plan_rung`` does; the spent budget is the sum of every trial's rung budget.
    """
    if problem.at_budget is None:
        raise ValueError(f"problem {problem.name!r} has no budget")
    trials = trials_from_random(problem.space, n, seed)
    sizes = schedule.sizes(n)
    stages: list[list[dict[str, Any]]] = []
    spent = 0.0
    for rung, budget in enumerate(schedule.budgets):
        if rung:
            trials = promote(stages[-1], sizes[rung], metric=METRIC, mode="min")
        stage = [{**_record(t, problem.at_budget(t, budget)), "rung": rung, "budget": budget} for t in trials]
        spent += budget * len(stage)
        stages.append(stage)
    best = min(stages[-1], key=lambda r: (r["metrics"][METRIC], str(r["trial_id"])))
    return HalvingRun(best=best, spent=spent, stages=stages)


def trials_to_reach(values: Sequence[float], target: float) -> float:
    """How many trials (in asked order) until the best so far is ``<= target``; ``inf`` if never."""
    best = math.inf
    for count, value in enumerate(values, start=1):
        best = min(best, value)
        if best <= target:
            return count
    return math.inf


def median(values: Sequence[float]) -> float:
    """The median (``inf`` entries count as larger than everything)."""
    return float(statistics.median(values))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (inclusive method), or the value itself for one value."""
    if len(values) < 2:
        return float(values[0]), float(values[0])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3
