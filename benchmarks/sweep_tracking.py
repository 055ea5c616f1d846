"""MLflow tracking overhead per trial: the same Python-callable sweep tracked vs untracked, in ``airflow dags test``.

One sweep of ``--trials`` random trials of a Python function (each sleeps ``--work`` seconds),
in ``--max-parallel-tasks`` mapped tasks, ``cache="off"``, run with ``mlflow_conn_id="mlflow_default"``
(a real ``mlflow server``, SQLite) and with ``mlflow_conn_id=None`` (tracking off), alternating,
``--runs`` times each. Prints the trial phase (from the first mapped trial task's start to the
last one's end, read from the metadata DB's ``task_instance`` table) per trial with and without
tracking, the difference per trial and the ratio; the goal is an overhead of at most 5 % or
0.2 s per trial, whichever is larger. A trivial first task keeps the start of
``airflow dags test``'s in-process API out of the figures. Asserts nothing about speed.

Usage: ``.venv/bin/python benchmarks/sweep_tracking.py [--trials 200] [--max-parallel-tasks 4] [--work 0.01] [--runs 1]``
"""

from __future__ import annotations

import argparse
import statistics
import textwrap

from _sweep_bench import BenchHome, mlflow_conn_env, mlflow_one_off_seconds, ratio, running_mlflow

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import time

    import pendulum
    from airflow.sdk import dag, task

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task


    @trial_task
    def work(x):
        time.sleep({work})
        return {{"loss": x}}


    @task
    def warm_up():
        pass  # the first task of `airflow dags test` also starts its in-process API


    def make(dag_id, conn_id):
        @dag(
            dag_id=dag_id,
            schedule=None,
            start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
            catchup=False,
            params=sweep_params(
                search_space={{"x": {{"low": 0.0, "high": 1.0}}}}, strategy="random", n_trials={trials},
                max_parallel_tasks={tasks}, metric="loss", mode="min", cache="off",
            ),
        )
        def sweep():
            batches = plan_sweep(mlflow_conn_id=conn_id)
            warm_up() >> batches
            select_best_trial(work.expand_kwargs(batches), batches)

        return sweep()


    make("bench_tracked", "mlflow_default")
    make("bench_untracked", None)
    """
)

VARIANTS = (("bench_untracked", "tracking off"), ("bench_tracked", "MLflow tracking"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--max-parallel-tasks", type=int, default=4)
    parser.add_argument("--work", type=float, default=0.01, help="seconds each trial works (sleeps)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant (the median is shown)")
    args = parser.parse_args()
    if args.trials < 1 or args.runs < 1 or args.max_parallel_tasks < 1:
        parser.error(f"--trials, --runs and --max-parallel-tasks must be >= 1, got {vars(args)!r}")

    dag_text = DAG_FILE.format(work=args.work, trials=args.trials, tasks=args.max_parallel_tasks)
    phases: dict[str, list[float]] = {dag_id: [] for dag_id, _ in VARIANTS}
    walls: dict[str, list[float]] = {dag_id: [] for dag_id, _ in VARIANTS}
    with running_mlflow() as server:
        home = BenchHome(dag_text, mlflow_conn_env(server.url))
        try:
            for _ in range(args.runs):
                for dag_id, _ in VARIANTS:
                    run = home.dags_test(dag_id)
                    summary = home.xcom(run, "select_best_trial") or {}
                    if summary.get("n_succeeded") != args.trials:
                        raise SystemExit(
                            f"{dag_id}: {summary.get('n_succeeded')!r} of {args.trials} trials succeeded"
                        )
                    phases[dag_id].append(run.phase("work"))
                    walls[dag_id].append(run.wall)
        finally:
            home.close()
    import_s, plugins_s, plugins = mlflow_one_off_seconds()

    n = args.trials
    print(
        f"Python-callable sweep, {n} trials of {args.work:g} s work in {args.max_parallel_tasks} mapped tasks, "
        f"cache off, {args.runs} run(s) each, inside `airflow dags test`:"
    )
    per_trial = {}
    for dag_id, label in VARIANTS:
        phase = statistics.median(phases[dag_id])
        per_trial[dag_id] = phase / n
        print(
            f"  {label:16s} trial phase {phase:7.2f} s   {per_trial[dag_id]:.4f} s per trial   "
            f"dags test {statistics.median(walls[dag_id]):6.1f} s"
        )
    off, on = per_trial["bench_untracked"], per_trial["bench_tracked"]
    allowed = max(0.05 * off, 0.2)
    print(
        f"  tracking overhead: {on - off:+.4f} s per trial, ratio tracked / untracked {ratio(on, off)}   "
        f"(goal <= {allowed:.3f} s per trial: the larger of 5 % and 0.2 s)"
    )
    batch = -(-n // args.max_parallel_tasks)
    one_off = import_s + plugins_s
    print(
        f"  not in these figures: a real executor runs each mapped task in its own process, which pays "
        f"import mlflow ({import_s:.2f} s here, measured apart) and, on its first REST call, the request-header "
        f"plugins {plugins} ({plugins_s:.2f} s): once per task, i.e. {one_off / batch:.4f} s per trial at "
        f"{batch} trials per task"
    )


if __name__ == "__main__":
    main()
