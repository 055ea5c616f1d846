"""Wall time of a sweep of trivial trials: batched (this provider) vs plain ``@task`` + ``.expand``.

Each sweep is one real DAG run through ``airflow dags test`` on a throw-away SQLite home:

- *batched*: ``plan_sweep`` -> ``trial_task.expand_kwargs`` (at most ``--max-parallel-tasks``
  mapped tasks) -> ``select_best_trial``;
- *plain*: a stock ``@task`` returning the trial list -> a stock ``@task`` ``.expand()`` with one
  mapped task per trial -> a stock reduce task. Plain mapping is only allowed up to
  ``[core] max_map_length`` (1024), so it is skipped above that.

Usage::

    .venv/bin/python benchmarks/sweep_scale.py                # 100, 1000, 10000 trials
    .venv/bin/python benchmarks/sweep_scale.py --sizes 100 1000 --max-parallel-tasks 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MAX_MAP_LENGTH = 1024

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum
    from airflow.sdk import dag, get_current_context, task

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task, trials_from_random

    SPACE = {"x": {"low": 0.0, "high": 1.0}, "y": {"low": 0, "high": 1000000}}
    START = pendulum.datetime(2024, 1, 1, tz="UTC")


    @trial_task
    def trivial(x, y):
        return {"loss": x + y}


    @dag(schedule=None, start_date=START, params=sweep_params(search_space=SPACE, n_trials=100))
    def bench_batched():
        batches = plan_sweep()
        select_best_trial(trivial.expand_kwargs(batches), batches)


    @task
    def make_trials():
        n = get_current_context()["dag_run"].conf.get("n_trials", 100)
        return [t["hparams"] for t in trials_from_random(SPACE, n, 0)]


    @task
    def one(hp):
        return {"hparams": hp, "loss": hp["x"] + hp["y"]}


    @task
    def best(results):
        return min(results, key=lambda r: r["loss"])


    @dag(schedule=None, start_date=START)
    def bench_plain():
        best(one.expand(hp=make_trials()))


    bench_batched()
    bench_plain()
    """
)


def _run(home: Path, dags: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__MAX_MAP_LENGTH=str(MAX_MAP_LENGTH),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # the run state is read from the INFO log
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return subprocess.run(
        [str(VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _time_run(home: Path, dags: Path, dag_id: str, conf: dict, timeout: float) -> float | None:
    started = time.perf_counter()
    proc = _run(home, dags, "dags", "test", dag_id, "--conf", json.dumps(conf), timeout=timeout)
    elapsed = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "state=success" not in out:
        sys.stderr.write(f"{dag_id} {conf} did not succeed:\n{out[-3000:]}\n")
        return None
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--max-parallel-tasks", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        dags.mkdir(parents=True)
        (dags / "bench_dags.py").write_text(DAG_FILE)
        migrate = _run(home, dags, "db", "migrate", timeout=900)
        if migrate.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")

        print(f"airflow dags test, trivial trials, max_parallel_tasks={args.max_parallel_tasks}")
        print(f"{'trials':>8} {'batched s':>10} {'plain s':>10} {'batched/plain':>14}")
        for n in args.sizes:
            conf = {"n_trials": n, "strategy": "random", "max_parallel_tasks": args.max_parallel_tasks}
            batched = _time_run(home, dags, "bench_batched", conf, args.timeout)
            plain = None
            if n <= MAX_MAP_LENGTH:
                plain = _time_run(home, dags, "bench_plain", {"n_trials": n}, args.timeout)
            ratio = f"{batched / plain:.2f}" if batched and plain else "n/a"
            batched_s = f"{batched:.1f}" if batched else "failed"
            plain_s = f"{plain:.1f}" if plain else ("not allowed" if n > MAX_MAP_LENGTH else "failed")
            print(f"{n:>8} {batched_s:>10} {plain_s:>10} {ratio:>14}", flush=True)


if __name__ == "__main__":
    main()
