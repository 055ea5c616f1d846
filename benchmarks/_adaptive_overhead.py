"""Figure 3 of the adaptive-sweep benchmark: the Airflow overhead per round, and Airflow runs vs direct calls.

Not a benchmark itself (``adaptive_sweep.py`` calls :func:`figure_3`). The runs are those of
``_adaptive_airflow.py``: one TPE and one halving DAG under a real scheduler, then each through
``airflow dags test`` (the TPE DAG once per strategy asked, with ``--conf {"strategy": ...}``).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

from _adaptive_search import halving_search, median, rounds_search

from airflow_mlops_provider.sweeps import halving

if TYPE_CHECKING:
    from collections.abc import Callable

    from _adaptive_search import Problem


def _run_line(label: str, best: dict[str, Any]) -> str:
    return f"{label} best {best.get('trial_id')} loss {float((best.get('metrics') or {})['loss']):.6f}"


def _boundary_line(b: Any, marks: Any) -> tuple[str, float]:
    """One gap, split: the plan task's own run time (to mark "plan ends"), and each other span."""
    spans, previous = [], None
    for mark, what, _ in marks:
        value = b.marks.get(mark)
        if previous is not None and value is not None and what:
            spans.append((mark, what, value - previous))
        previous = value if value is not None else previous
    plan = sum(seconds for mark, _, seconds in spans if mark == "plan ends")
    rest = ", ".join(f"{what} {seconds:.2f}" for mark, what, seconds in spans if mark != "plan ends")
    return f"{b.gap:5.2f} s = plan task {plan:.2f} + the rest {b.gap - plan:.2f} ({rest})", plan


def _gap_goal(label: str, gaps: list[float], plans: list[float], goal: Callable[..., str]) -> float:
    gap = median(gaps) if gaps else math.inf
    name = "3 overhead per round" + ("" if label == "untracked" else f", {label}") + " (median gap)"
    print(
        f"  goal gap < 10 s on 2 cores, {label}: median {gap:.2f} s over {len(gaps)} stage boundaries (plan task "
        f"{median(plans) if plans else math.nan:.2f} s of it), max {max(gaps, default=math.inf):.2f} s: "
        + goal(name, f"{gap:.2f} s", "< 10 s", gap < 10)
    )
    return gap


def _tracked_lines(home: Any, run: Any, b: Any, steps: dict[str, list[float]]) -> None:
    """Print where a tracked boundary's plan task and first next trial task spent their time."""
    from _adaptive_tracked import plan_split, task_timeline, trial_split

    plan_line, spans = plan_split(
        task_timeline(home.home, b.plan_ti), b.marks.get("plan starts"), b.marks.get("plan ends")
    )
    for step, seconds in spans.items():
        steps.setdefault(step, []).append(seconds)
    trial = trial_split(
        task_timeline(home.home, b.trial_ti) if b.trial_ti else None,
        b.marks.get("trial task starts"),
        b.marks.get("next trial starts"),
    )
    print(f"        plan task: {plan_line}")
    print(f"        first trial task, start_date to its first trial's start: {trial}")


def figure_3(
    mixed: Problem,
    strategies: list[str],
    goal: Callable[[str, str, str, bool | None], str],
    *,
    tracked: bool = False,
) -> None:
    """
    Print figure 3; record its goals with ``goal(figure, measured, goal, met)``.

    :param tracked: Also run and time the tracked DAGs (a real ``mlflow server``).
    """
    import _adaptive_airflow as af

    from airflow_mlops_provider.sweeps import suggest_trials

    print(
        f"\n[3] Airflow: {af.TPE_DAG} (adaptive_sweep, {af.ROUNDS} rounds x {af.SIZE} trials in {af.TASKS} mapped "
        f"tasks) and {af.HALVING_DAG} (halving_sweep, halving{af.HALVING_ARGS}, {af.N_HALVING} trials) of the "
        f"mixed Hartmann-6, untracked, cache off, seed {af.SEED}"
        + (
            f"; then the same two DAGs tracked ({', '.join(af.TRACKED_IDS)}: mlflow_default = a real mlflow "
            f"server on loopback, cache {af.TRACKED_CACHE!r}, the default of a tracked sweep)"
            if tracked
            else " (--tracked adds the same DAGs tracked in MLflow)"
        )
    )
    direct = {s: rounds_search(mixed, s, af.SEED, af.ROUNDS, af.SIZE) for s in strategies}
    hv_direct = halving_search(mixed, halving(*af.HALVING_ARGS), af.N_HALVING, af.SEED)
    started = time.perf_counter()
    suggest_trials(
        mixed.space, af.SIZE, strategy="tpe", seed=af.SEED, metric="loss", history=direct["tpe"].stages[:-1],
        trials_per_round=af.SIZE,
    )  # fmt: skip
    ask_s, import_s = time.perf_counter() - started, af.optuna_import_seconds()
    started = time.perf_counter()
    home, runs, up = af.scheduled_runs(tracked=tracked)
    try:
        print(
            f"  api-server + scheduler (LocalExecutor, parallelism 2) + dag-processor up and serving in {up:.1f} s; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores. Gap = first trial of stage k+1 "
            "starts - last trial of stage k ends (the trials' own clocks), split at: "
            + "; ".join(f"{until} (ends '{what}')" for _, what, until in af.MARKS[1:])
        )
        groups = [("untracked", (af.TPE_DAG, af.HALVING_DAG))]
        if tracked:
            groups.append(("tracked", af.TRACKED_IDS))
        for label, dag_ids in groups:
            gaps, plans, steps = [], [], {}
            if label == "tracked":
                print(
                    "  tracked: the same split; in these runs 'trial task: DAG parse, pull batch' also holds the "
                    "trial's MLflow run (import mlflow, the first request, find or create the run). Below each gap, "
                    "from the task logs: the plan task's steps (ended by the provider's log lines) and the one-off "
                    "MLflow costs timed inside each task process by the tracked DAG file's timing hook"
                )
            for dag_id in dag_ids:
                run = runs[dag_id]
                print(f"  {run.dag_id} under the scheduler: {run.wall:.1f} s from trigger to success")
                for b in run.boundaries:
                    line, plan = _boundary_line(b, af.MARKS)
                    gaps.append(b.gap)
                    plans.append(plan)
                    print(f"    after stage {b.stage}: {line}")
                    if label == "tracked":
                        _tracked_lines(home, run, b, steps)
            if label == "untracked":
                print(
                    f"  for scale: import optuna {import_s:.2f} s in a fresh task-like process, the last round's "
                    f"suggest_trials (replaying {af.ROUNDS - 1} rounds) {ask_s:.2f} s in-process"
                )
            else:
                _tracked_medians(steps)
            _gap_goal(label, gaps, plans, goal)
        checks = [("halving", af.HALVING_DAG, None, hv_direct.best, hv_direct.stages, runs[af.HALVING_DAG])]
        checks += [
            (
                s,
                af.TPE_DAG,
                {"strategy": s},
                d.best_record(),
                d.stages,
                runs[af.TPE_DAG] if s == "tpe" else None,
            )
            for s, d in direct.items()
        ]
        if tracked:
            tpe_id, halving_id = af.TRACKED_IDS
            checks.append(
                ("halving tracked", halving_id, False, hv_direct.best, hv_direct.stages, runs[halving_id])
            )
            checks.append(
                (
                    "tpe tracked",
                    tpe_id,
                    False,
                    direct["tpe"].best_record(),
                    direct["tpe"].stages,
                    runs[tpe_id],
                )
            )
        for label, dag_id, conf, best, stages, scheduled in checks:
            bests = []
            if conf is not False:  # the tracked DAGs run under the scheduler only
                tested = home.dags_test(dag_id, conf)
                bests.append(("dags test", home.xcom(tested, "select_best")["best"]))
            if scheduled is not None:
                bests.insert(0, ("scheduler", scheduled.summary["best"]))
            same = all(
                (b["trial_id"], b["metrics"]["loss"]) == (best["trial_id"], best["metrics"]["loss"])
                for _, b in bests
            )
            same_stages = scheduled is None or [
                sorted(r["trial_id"] for r in s) for s in scheduled.stage_records
            ] == [sorted(r["trial_id"] for r in s) for s in stages]
            print(
                f"  {label}: "
                + "; ".join(_run_line(where, b) for where, b in bests)
                + f"; {_run_line('direct', best)}"
                + (
                    ""
                    if scheduled is None
                    else f"; every stage ran the direct call's trials: {'yes' if same_stages else 'NO'}"
                )
            )
            goal(
                f"3 {label} through Airflow = direct",
                "same best" if same else "DIFFERENT",
                "equal",
                same and same_stages,
            )
        print(f"  (Airflow part: {time.perf_counter() - started:.1f} s)")
    finally:
        home.close()


def _tracked_medians(steps: dict[str, list[float]]) -> None:
    """The median of each plan-task step over the tracked boundaries, and the one-off costs measured apart."""
    from _sweep_bench import mlflow_one_off_seconds

    text = ", ".join(f"{step} {median(values):.2f}" for step, values in steps.items())
    import_s, plugins_s, plugins = mlflow_one_off_seconds()
    print(f"  tracked plan tasks, median of each step (s): {text}")
    print(
        f"  for scale, in a fresh process that has imported airflow.sdk: import mlflow {import_s:.2f} s, then "
        f"MLflow's request-header plugins {plugins} {plugins_s:.2f} s (what the first request imports)"
    )
