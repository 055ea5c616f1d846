"""Container sweep (``plan_sweep`` + ``container_trials``) vs stock ``DockerOperator.partial().expand()``.

The same ``--trials`` containers (``mlops-base:bookworm``, each sleeps ``--sleep`` seconds and
writes its result), tracking off, each variant one real DAG run through ``airflow dags test``,
alternating, ``--runs`` times:

- *stock*: a ``@task`` returning one ``environment`` per trial ->
  ``DockerOperator.partial(...).expand(environment=...)`` (apache-airflow-providers-docker; the
  result retrieved with ``retrieve_output``) -> a ``@task`` picking the best;
- *ours*: ``plan_sweep(max_parallel_tasks=N)`` -> ``container_trials(runtime="docker")`` ->
  ``select_best_trial``, one trial per mapped task as in stock;
- *ours, batched*: the same with ``max_parallel_tasks=--batched-tasks``, each mapped task running
  several containers in turn (stock cannot map fewer tasks than trials: reported, not compared).

Prints the trial phase of each (from the first mapped trial task's start to the last one's end,
read from the metadata DB's ``task_instance`` table), the overhead per container over its sleep,
and the ratios to stock (goal <= 1.05). Asserts nothing about speed.

Usage: ``.venv/bin/python benchmarks/container_sweep.py [--trials 6] [--sleep 1] [--batched-tasks 2] [--runs 3]``
Needs a Docker engine and the image ``mlops-base:bookworm`` (scripts/ci/build_base_image.sh).
"""

from __future__ import annotations

import argparse
import statistics
import textwrap

from _sweep_bench import IMAGE, BenchHome, ratio

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import dag, get_current_context, task

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import container_trials, plan_sweep, select_best_trial

    # The same trial in both: ours reads $MLOPS_TRIAL and writes JSON to $MLOPS_RESULT_FILE; stock
    # reads $X and writes the pickle DockerOperator's retrieve_output reads.
    TRIAL = '''
    import json, os, pathlib, pickle, time
    time.sleep({sleep})
    if "MLOPS_TRIAL" in os.environ:
        x = json.loads(os.environ["MLOPS_TRIAL"])["hparams"]["x"]
        out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({{"loss": float(x)}}))
    else:
        pathlib.Path("/tmp/result.pkl").write_bytes(pickle.dumps({{"loss": float(os.environ["X"])}}))
    '''
    START = pendulum.datetime(2025, 1, 1, tz="UTC")


    @task
    def environments():
        n = get_current_context()["dag_run"].conf["n"]
        return [{{"X": str(i)}} for i in range(n)]


    @task
    def best(results):
        return min(results, key=lambda r: r["loss"])


    @dag(dag_id="bench_stock_docker", schedule=None, start_date=START, catchup=False)
    def stock():
        results = DockerOperator.partial(
            task_id="train",
            image="{image}",
            command=["python3", "-c", TRIAL],
            auto_remove="force",
            mount_tmp_dir=False,
            retrieve_output=True,
            retrieve_output_path="/tmp/result.pkl",
        ).expand(environment=environments())
        best(results.output)


    @dag(
        dag_id="bench_container_trials",
        schedule=None,
        start_date=START,
        catchup=False,
        params=sweep_params(search_space={{"x": [0]}}, strategy="grid", metric="loss", mode="min"),
    )
    def ours():
        batches = plan_sweep(mlflow_conn_id=None)  # search_space and max_parallel_tasks from the conf
        results = container_trials(
            task_id="train", batches=batches, runtime="docker", image="{image}", command=["python3", "-c", TRIAL]
        )
        select_best_trial(results, batches)


    stock()
    ours()
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each container sleeps")
    parser.add_argument("--batched-tasks", type=int, default=2, help="mapped tasks of the batched case")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant (the median is shown)")
    args = parser.parse_args()
    if min(args.trials, args.batched_tasks, args.runs) < 1:
        parser.error(f"--trials, --batched-tasks and --runs must be >= 1, got {vars(args)!r}")

    n = args.trials
    space = {"x": list(range(n))}
    variants = {
        "stock": ("bench_stock_docker", {"n": n}, f"DockerOperator.expand, {n} tasks"),
        "ours": (
            "bench_container_trials",
            {"search_space": space, "max_parallel_tasks": n},
            f"container_trials, {n} tasks",
        ),
        "batched": (
            "bench_container_trials",
            {"search_space": space, "max_parallel_tasks": args.batched_tasks},
            f"container_trials, {args.batched_tasks} tasks",
        ),
    }
    home = BenchHome(DAG_FILE.format(image=IMAGE, sleep=args.sleep))
    phases: dict[str, list[float]] = {name: [] for name in variants}
    tasks: dict[str, int] = {}
    try:
        for _ in range(args.runs):
            for name, (dag_id, conf, _) in variants.items():
                run = home.dags_test(dag_id, conf)
                phases[name].append(run.phase("train"))
                tasks[name] = run.ran("train")
    finally:
        home.close()

    print(
        f"{n} containers on Docker (each sleeps {args.sleep:g} s), tracking off, {args.runs} run(s) each, "
        "inside `airflow dags test` (mapped tasks run one after the other):"
    )
    median = {name: statistics.median(values) for name, values in phases.items()}
    for name, (_, _, label) in variants.items():
        print(
            f"  {label:34s} trial phase {median[name]:7.2f} s   ({tasks[name]} mapped tasks; "
            f"{(median[name] - n * args.sleep) / n:.3f} s per container over its sleep)"
        )
    print(
        f"  ratio container_trials / DockerOperator.expand, one trial per task: "
        f"{ratio(median['ours'], median['stock'])}   (goal <= 1.05)"
    )
    print(
        f"  batched ({args.batched_tasks} tasks, several containers each; stock has no equivalent): "
        f"{ratio(median['batched'], median['stock'])} of stock's {n}-task time"
    )


if __name__ == "__main__":
    main()
