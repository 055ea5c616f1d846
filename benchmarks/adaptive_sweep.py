"""Adaptive sweeps: TPE vs random, successive halving vs random at full budget, Airflow overhead per round.

Prints figures and the issue's goals; asserts nothing (it exits non-zero only when it cannot
measure: a DAG run that fails, a missing library). Seeded: the same flags print the same
search figures (the Airflow timings vary with the machine).

1. **TPE vs random**, ``--rounds`` x ``--trials-per-round`` trials (default 4 x 16 = 64), ``--seeds``
   seeds, through ``suggest_trials`` round by round (what ``adaptive_sweep``'s plan tasks call),
   on Hartmann-6, on a mixed int/float/categorical 6-D variant of it, and on an SVC on
   scikit-learn's digits (validation error). Random is ``strategy="random"`` through the same
   function; ``plan_sweep``'s random draw (``trials_from_random``), CMA-ES and QMC are extra rows.
   Per strategy: the best value over the seeds (median, quartiles, range), and the trials it needs
   until its best so far is as good as random's final best of the same seed index.
2. **Successive halving vs random at full budget** (see the printed definition), on a closed-form
   budgeted Hartmann and on the SVC with budget = training rows, via ``trials_from_random`` and
   ``promote`` rung by rung, as ``halving_sweep``'s plan tasks do.
3. **Airflow overhead per round** under a real api-server + scheduler (LocalExecutor) +
   dag-processor on loopback: a TPE sweep (4 rounds x 4 trials) and a halving sweep (27 trials,
   rungs at budgets 1, 3, 9, 27) of trivial trials, untracked; the gap between the last trial of
   stage k ending and the first of stage k+1 starting (the trials' own timestamps), split by the
   task instances' dates. Both DAGs then run through ``airflow dags test``, and the best of every
   Airflow run is checked against the direct call with the same seed. With ``--tracked``, the
   same two DAGs also run tracked (``mlflow_default`` = a real ``mlflow server`` on loopback,
   cache ``readwrite``): their gaps with the same split, each tracked plan task split further
   from its log (the ask, ``start_sweep``, ``cached_results``, the XComs) and the one-off MLflow
   costs of each task process (``import mlflow``, the first request and the request-header
   plugins it loads, Feast's among them), and their bests checked against the direct calls.

Usage: ``.venv/bin/python benchmarks/adaptive_sweep.py [--quick] [--seeds 10] [--no-airflow | --only airflow]
[--tracked] [--extras all]`` (default about 5 min on 2 cores; ``--quick``: 3 seeds, no CMA-ES/QMC
rows, about 3 min; ``--tracked`` adds about 3 min, so it is off by default; ``--only airflow``:
figure 3 alone, about 2 min, 5 with ``--tracked``)
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
from typing import Any

import _adaptive_objectives as obj
from _adaptive_overhead import figure_3
from _adaptive_search import (
    Problem,
    Search,
    halving_search,
    median,
    quartiles,
    random_draw,
    rounds_search,
    trials_to_reach,
)

from airflow_mlops_provider.sweeps import halving

GOALS: list[tuple[str, str, str, bool | None]] = []  # (figure, measured, goal, met)
#: Whether figure 3 runs the tracked DAGs by default, and what they add to a run (measured on 2 cores).
TRACKED_DEFAULT, TRACKED_COST = False, "3 min (two DAG runs of ~70 s each, an mlflow server)"


def _goal(figure: str, measured: str, goal: str, met: bool | None) -> str:
    GOALS.append((figure, measured, goal, met))
    return "met" if met else ("not measured" if met is None else "NOT met")


def _fmt_trials(value: float, total: int) -> str:
    return f"> {total}" if math.isinf(value) else f"{value:g} ({value / total:.0%})"


def _mixed_optimum() -> float:
    """The mixed variant's optimum: L-BFGS-B over x1..x4 for every x5 and shape, from Hartmann's argmin."""
    from scipy.optimize import minimize

    best = math.inf
    for shape in obj.SHAPES:
        for x5 in range(21):
            hp = {"x5": x5, "shape": shape}

            def f(x: Any, hp: dict[str, Any] = hp) -> float:
                return obj.mixed_hartmann({**hp, **{f"x{i + 1}": float(v) for i, v in enumerate(x)}})

            found = minimize(f, obj.HARTMANN_ARGMIN[:4], method="L-BFGS-B", bounds=[(0.0, 1.0)] * 4)
            best = min(best, float(found.fun))
    return best


def problems(svc: Any) -> list[Problem]:
    from _adaptive_svc import MAX_ROWS, SVC_SPACE

    return [
        Problem(
            "Hartmann-6",
            obj.HARTMANN_SPACE,
            lambda t: obj.hartmann_of(t["hparams"]),
            note=f"optimum {obj.HARTMANN_OPTIMUM}",
        ),
        Problem(
            "mixed Hartmann-6",
            obj.MIXED_SPACE,
            lambda t: obj.mixed_hartmann(t["hparams"]),
            lambda t, b: obj.budgeted_hartmann(t["hparams"], b),
            note=f"4 floats, int x5 on 21 points, categorical shape; optimum {_mixed_optimum():.5f}",
        ),
        Problem(
            "SVC on digits",
            SVC_SPACE,
            svc.error,
            svc.error,
            note=f"validation error (582 rows) after training on {MAX_ROWS} rows; 6 hyper-parameters",
        ),
    ]


def figure_1(problem: Problem, args: argparse.Namespace, extras: bool) -> dict[str, list[Search]]:
    total = args.rounds * args.trials_per_round
    strategies = ["tpe", "random"] + (["cmaes", "qmc"] if extras else [])
    started = time.perf_counter()
    runs = {
        s: [rounds_search(problem, s, seed, args.rounds, args.trials_per_round) for seed in range(args.seeds)]
        for s in strategies
    }
    runs["random draw"] = [random_draw(problem, total, seed) for seed in range(args.seeds)]
    print(
        f"\n[1] {problem.name} ({problem.note}): {args.rounds} rounds x {args.trials_per_round} = {total} trials, "
        f"{args.seeds} seeds, minimised ({time.perf_counter() - started:.1f} s)"
    )
    print(
        f"  {'strategy':28s} {'median best':>11s} {'mean':>9s} {'quartiles':>19s} {'min .. max':>19s}   "
        "trials until its best so far <= random's final best (same seed index)"
    )
    targets = [r.best for r in runs["random"]]
    labels = {"random": "random (suggest_trials)", "random draw": "random (trials_from_random)"}
    for name, searches in runs.items():
        bests = [s.best for s in searches]
        q1, q3 = quartiles(bests)
        reach = ""
        if name != "random":
            counts = [trials_to_reach(s.values, t) for s, t in zip(searches, targets)]
            reached = sum(1 for c in counts if not math.isinf(c))
            reach = f"median {_fmt_trials(median(counts), total)}, {reached}/{len(counts)} seeds reach it"
        print(
            f"  {labels.get(name, name):28s} {median(bests):11.5f} {statistics.fmean(bests):9.5f} [{q1:8.5f}, {q3:8.5f}] "
            f"[{min(bests):8.5f}, {max(bests):8.5f}]   {reach}"
        )
    same_start = sum(
        1
        for t, r in zip(runs["tpe"], runs["random"])
        if [x["trial_id"] for x in t.stages[0]] == [x["trial_id"] for x in r.stages[0]]
    )
    print(
        f"  TPE's first round (no result yet: its random start-up) is random's first round in {same_start}/"
        f"{args.seeds} seeds (Optuna's TPE starts with a RandomSampler of the same seed)"
    )
    tpe, rnd = median([s.best for s in runs["tpe"]]), median(targets)
    counts = median([trials_to_reach(s.values, t) for s, t in zip(runs["tpe"], targets)])
    print(
        f"  goal TPE median better than random: {tpe:.5f} vs {rnd:.5f}: "
        + _goal(f"1 {problem.name}: TPE median best vs random", f"{tpe:.5f} vs {rnd:.5f}", "lower", tpe < rnd)
    )
    print(
        f"  goal TPE reaches random's final best within half the trials: median {_fmt_trials(counts, total)}: "
        + _goal(
            f"1 {problem.name}: trials TPE needs",
            _fmt_trials(counts, total),
            f"<= {total // 2}",
            counts <= total / 2,
        )
    )
    return runs


def figure_2(problem: Problem, schedule: Any, args: argparse.Namespace, baseline: list[Search]) -> None:
    total = args.rounds * args.trials_per_round
    full = schedule.budgets[-1]
    random_budget = total * full
    step = round(schedule.eta ** (len(schedule.budgets) - 1))  # n a multiple of it: every rung full
    ladder = [step * j for j in range(1, args.halving_steps + 1)]
    started = time.perf_counter()
    runs = {
        n: [halving_search(problem, schedule, n, 1000 + seed) for seed in range(args.seeds)] for n in ladder
    }
    targets = [s.best for s in baseline]
    print(
        f"\n[2] {problem.name}: halving(min_budget={schedule.min_budget}, max_budget={full}, eta={schedule.eta}) "
        f"(budgets {schedule.budgets}) vs random search of {total} trials at max_budget, {args.seeds} seeds "
        f"({time.perf_counter() - started:.1f} s)"
    )
    print(
        f"  definition: random search runs {total} trials_from_random trials (seed s) at max_budget = {full}, "
        f"spending {total} x {full} = {random_budget:g}, and reaches best B_s. Halving draws n trials "
        "(trials_from_random, seed 1000 + s), runs them at the first budget, and promotes sizes(n)[k] with "
        "promote() rung by rung; its best H_s(n) is the best of its last rung (run at max_budget, so the same "
        "full-budget metric). Budget = the sum of every trial's rung budget. For each seed, the budget "
        "needed is that of the smallest n on the ladder with H_s(n) <= B_s."
    )
    print(f"  random at full budget: median best {median(targets):.5f}, budget {random_budget:g}")
    print(
        f"  {'n':>5s} {'rung sizes':>18s} {'budget':>8s} {'share':>6s} {'median best':>11s}   seeds with H <= B"
    )
    needed: list[float] = [math.inf] * args.seeds
    at_40 = None
    for n, halvings in runs.items():
        spent = halvings[0].spent
        share = spent / random_budget
        values = [h.value for h in halvings]
        hits = [h.value <= t for h, t in zip(halvings, targets)]
        for seed, hit in enumerate(hits):
            if hit and math.isinf(needed[seed]):
                needed[seed] = share
        if share <= 0.40:
            at_40 = (n, share, median(values))
        print(
            f"  {n:5d} {str(schedule.sizes(n)):>18s} {spent:8g} {share:6.1%} {median(values):11.5f}   "
            f"{sum(hits)}/{len(hits)}"
        )
    need = median(needed)
    need_text = (
        f"> {ladder[-1]} trials ({runs[ladder[-1]][0].spent / random_budget:.0%})"
        if math.isinf(need)
        else f"{need:.1%}"
    )
    reached = sum(1 for v in needed if not math.isinf(v))
    print(
        f"  budget halving needs to reach random's best, share of random's: median {need_text} ({reached}/{args.seeds} seeds reach it on the ladder)"
    )
    print(
        f"  goal halving reaches random's best with <= 40 % of the budget: median {need_text}: "
        + _goal(f"2 {problem.name}: budget share to reach B_s", need_text, "<= 40 %", need <= 0.40)
    )
    if at_40 is not None:
        n, share, value = at_40
        met = _goal(
            f"2 {problem.name}: median H at {share:.1%} vs B",
            f"{value:.5f} vs {median(targets):.5f}",
            "<=",
            value <= median(targets),
        )
        print(
            f"  the same goal read on medians: halving with n = {n} ({share:.1%} of the budget) has median best "
            f"{value:.5f} vs random's {median(targets):.5f} at 100 %: {met}"
        )
    print("  " + _rank_correlations(problem, schedule, baseline[:5]))


def _rank_correlations(problem: Problem, schedule: Any, baseline: list[Search]) -> str:
    """How well each lower budget ranks the trials, over the random trials of ``baseline``'s seeds."""
    from scipy.stats import spearmanr

    rhos, kept = [], []
    for budget in schedule.budgets[:-1]:
        seen_all, full_all, survived = [], [], 0
        for search in baseline:
            records = search.stages[0]
            full = [r["metrics"]["loss"] for r in records]
            seen = [problem.at_budget(r, budget) for r in records]  # type: ignore[misc]
            seen_all += seen
            full_all += full
            best = min(range(len(records)), key=lambda i: (full[i], str(records[i]["trial_id"])))
            survived += sum(1 for v in seen if v < seen[best]) < len(records) / schedule.eta
        rhos.append(f"{budget}: {spearmanr(seen_all, full_all).statistic:.2f}")
        kept.append(f"{budget}: {survived}/{len(baseline)}")
    return (
        f"why: over the random trials of {len(baseline)} seeds ({len(baseline[0].stages[0])} each), Spearman's rho "
        f"of the metric at each lower budget with the full-budget metric {', '.join(rhos)}; the seed's full-budget "
        f"best ranks in the top 1/eta at that budget (so a rung would keep it) in {', '.join(kept)} seeds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per strategy (default 10; 3 with --quick)"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trials-per-round", type=int, default=16)
    parser.add_argument(
        "--halving-steps", type=int, default=None, help="halving ladder length (default 10; 6 quick)"
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, no CMA-ES/QMC rows, a shorter ladder")
    parser.add_argument(
        "--extras", choices=("none", "closed-form", "all"), default=None,
        help="where to add CMA-ES and QMC rows (default closed-form: on the SVC they cost ~70 s; none with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--airflow-strategies",
        default="tpe,random",
        help="strategies whose TPE-DAG run is checked (comma-separated)",
    )
    parser.add_argument("--no-airflow", action="store_true", help="leave out figure 3 (no Airflow services)")
    parser.add_argument(
        "--only", choices=("airflow",), default=None, help="run only figure 3 (airflow: no search figures)"
    )
    parser.add_argument(
        "--tracked", action=argparse.BooleanOptionalAction, default=TRACKED_DEFAULT,
        help="figure 3 also runs both DAGs tracked in MLflow (a real mlflow server on loopback) and splits "
        f"their gaps; default {'on' if TRACKED_DEFAULT else 'off'}: it adds about {TRACKED_COST}, which "
        "would take the default run past 7 min",
    )  # fmt: skip
    args = parser.parse_args()
    args.seeds = args.seeds or (3 if args.quick else 10)
    args.halving_steps = args.halving_steps or (6 if args.quick else 10)
    args.extras = args.extras or ("none" if args.quick else "closed-form")
    args.airflow_strategies = [s for s in args.airflow_strategies.split(",") if s]
    if "tpe" not in args.airflow_strategies:
        args.airflow_strategies.insert(0, "tpe")
    if args.only and args.no_airflow:
        parser.error("--only airflow and --no-airflow leave nothing to run")
    if min(args.seeds, args.rounds, args.trials_per_round, args.halving_steps) < 1:
        parser.error(
            f"--seeds, --rounds, --trials-per-round and --halving-steps must be >= 1, got {vars(args)!r}"
        )
    try:
        import optuna
        import sklearn
    except ImportError as err:
        raise SystemExit(f"the [sweeps] extra and scikit-learn are needed: {err}") from err
    from _adaptive_svc import MAX_ROWS, DigitsSvc

    logging.getLogger("airflow_mlops_provider").setLevel(logging.WARNING)  # one info line per CMA-ES/QMC ask

    started = time.perf_counter()
    print(
        f"Adaptive sweeps benchmark: Python {sys.version.split()[0]}, optuna {optuna.__version__}, scikit-learn "
        f"{sklearn.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    svc = DigitsSvc()
    hartmann, mixed, svc_problem = problems(svc)
    if args.only == "airflow":
        figure_3(mixed, args.airflow_strategies, _goal, tracked=args.tracked)
        _summary(started)
        return
    figure_1(hartmann, args, args.extras != "none")
    mixed_runs = figure_1(mixed, args, args.extras != "none")
    svc_runs = figure_1(svc_problem, args, args.extras == "all")
    # the random draws at full budget of figure 1 are figure 2's baseline
    figure_2(mixed, halving(1, obj.MAX_BUDGET, 3), args, mixed_runs["random draw"])
    figure_2(svc_problem, halving(MAX_ROWS // 27, MAX_ROWS, 3), args, svc_runs["random draw"])
    print(f"  (SVC fits run: {svc.fits})")
    if args.no_airflow:
        _goal("3 overhead per round", "skipped (--no-airflow)", "< 10 s", None)
    else:
        figure_3(mixed, args.airflow_strategies, _goal, tracked=args.tracked)
    _summary(started)


def _summary(started: float) -> None:
    print(f"\nSummary ({time.perf_counter() - started:.0f} s):")
    width = max(len(g[0]) for g in GOALS)
    for figure, measured, goal, met in GOALS:
        verdict = "yes" if met else ("-" if met is None else "NO")
        print(f"  {figure:{width}s}  {measured:>28s}  goal {goal:>8s}  met: {verdict}")


if __name__ == "__main__":
    main()
