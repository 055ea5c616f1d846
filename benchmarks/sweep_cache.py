"""Rerun of a container sweep fully served from the trial cache vs its first run, in ``airflow dags test``.

One sweep of ``--trials`` container trials on Docker (each sleeps ``--sleep`` seconds and writes
``/airflow/xcom/return.json``), tracked in a real ``mlflow server`` (SQLite), run twice with the
same ``cache_key``: the first run runs every container; the rerun finds every trial's finished
MLflow run and resolves it in ``plan_sweep`` (no mapped trial task, no container). Prints, for
both runs, the *trial phase* read from the metadata DB's ``task_instance`` table (the first run:
from the first mapped trial task's start to the last one's end; the rerun: ``plan_sweep``'s
duration, where the cached trials are resolved, plus any trial task that ran), the wall time of
``airflow dags test``, and the ratio (goal <= 0.10). A trivial first task keeps the start of
``airflow dags test``'s in-process API (which a run's first task pays) out of ``plan_sweep``. Asserts nothing about speed; it exits when
the rerun was not fully cached (the figure would mean nothing).

Usage: ``.venv/bin/python benchmarks/sweep_cache.py [--trials 8] [--sleep 2] [--max-parallel-tasks 8]``
Needs a Docker engine and the image ``mlops-base:bookworm`` (scripts/ci/build_base_image.sh).
"""

from __future__ import annotations

import argparse
import textwrap
import time
import uuid

from _sweep_bench import (
    IMAGE,
    BenchHome,
    DagRunTimes,
    containers_created,
    mlflow_conn_env,
    mlflow_one_off_seconds,
    ratio,
    running_mlflow,
)

DAG_ID = "bench_cached_sweep"

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum
    from airflow.sdk import dag, task

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

    TRIAL = '''
    import json, os, pathlib, time
    trial = json.loads(os.environ["MLOPS_TRIAL"])
    time.sleep({sleep})
    out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({{"loss": float(trial["hparams"]["x"])}}))
    '''


    @task
    def warm_up():
        pass  # the first task of `airflow dags test` also starts its in-process API: not in plan_sweep


    @dag(
        dag_id="{dag_id}",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        params=sweep_params(search_space={{"x": [0]}}, strategy="grid", metric="loss", mode="min"),
    )
    def sweep():
        batches = plan_sweep()  # tracking through mlflow_default; cache_key from the run's conf
        warm_up() >> batches
        results = container_trials(
            task_id="train", batches=batches, runtime="docker", image="{image}", command=["python3", "-c", TRIAL]
        )
        select_best_trial(results, batches)


    sweep()
    """
)


def _run(home: BenchHome, conf: dict) -> tuple[DagRunTimes, dict, int]:
    since = time.time()
    run = home.dags_test(DAG_ID, conf)
    created = containers_created(DAG_ID, since, time.time())
    summary = home.xcom(run, "select_best_trial") or {}
    return run, summary, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each trial's container sleeps")
    parser.add_argument("--max-parallel-tasks", type=int, default=None, help="default: one trial per task")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials!r}")

    conf = {
        "search_space": {"x": list(range(args.trials))},
        "cache_key": f"bench-{uuid.uuid4().hex[:8]}",
        "max_parallel_tasks": args.max_parallel_tasks or args.trials,
    }
    with running_mlflow() as server:
        home = BenchHome(
            DAG_FILE.format(dag_id=DAG_ID, image=IMAGE, sleep=args.sleep), mlflow_conn_env(server.url)
        )
        try:
            first, first_summary, first_created = _run(home, conf)
            rerun, summary, created = _run(home, conf)
        finally:
            home.close()
    if summary.get("n_cached") != args.trials or rerun.ran("train"):
        raise SystemExit(
            f"the rerun was not fully cached: n_cached={summary.get('n_cached')!r} of {args.trials}, "
            f"{rerun.ran('train')} trial tasks ran, {created} containers created"
        )
    if [r["trial_id"] for r in summary["leaderboard"]] != [
        r["trial_id"] for r in first_summary["leaderboard"]
    ]:
        print("  warning: the rerun's leaderboard order differs from the first run's")

    first_phase = first.phase("train")
    rerun_phase = rerun.phase("plan_sweep") + rerun.phase("train")
    print(
        f"Container sweep, {args.trials} trials on Docker (each sleeps {args.sleep:g} s), tracked in MLflow, "
        f"same cache_key twice, inside `airflow dags test`:"
    )
    print(
        f"  first run  trial phase {first_phase:7.2f} s  ({first.ran('train')} trial tasks, "
        f"{first_created} containers; plan_sweep {first.phase('plan_sweep'):.2f} s)   dags test {first.wall:6.1f} s"
    )
    print(
        f"  rerun      trial phase {rerun_phase:7.2f} s  (plan_sweep {rerun.phase('plan_sweep'):.2f} s; "
        f"{rerun.ran('train')} trial tasks, {created} containers, {summary['n_cached']} cached)   "
        f"dags test {rerun.wall:6.1f} s"
    )
    print(f"  ratio rerun / first run, trial phase: {ratio(rerun_phase, first_phase)}   (goal <= 0.10)")
    import_s, plugins_s, plugins = mlflow_one_off_seconds()
    one_off = import_s + plugins_s
    print(
        f"  the rerun's plan_sweep includes the process's one-off MLflow imports (measured apart, in a fresh "
        f"process): import mlflow {import_s:.2f} s + the first REST call loading the request-header plugins "
        f"{plugins} {plugins_s:.2f} s; without them the ratio is {ratio(max(rerun_phase - one_off, 0.0), first_phase)}. "
        "In the first run plan_sweep paid them, outside the trial phase (`airflow dags test` runs every task in "
        "one process; a real executor pays them in each task process, trial tasks included)"
    )
    whole = ("plan_sweep", "train", "select_best_trial")
    print(
        f"  whole sweep (plan_sweep start to select_best_trial end): first {first.phase(*whole):.2f} s, "
        f"rerun {rerun.phase(*whole):.2f} s, ratio {ratio(rerun.phase(*whole), first.phase(*whole))}; "
        f"dags test ratio {ratio(rerun.wall, first.wall)}"
    )


if __name__ == "__main__":
    main()
