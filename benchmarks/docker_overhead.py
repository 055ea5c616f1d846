"""Overhead of GpuDockerOperator over the stock DockerOperator, each inside ``airflow dags test``.

Prints, for the same short container run by each operator: the median wall time of
``airflow dags test`` and the median task duration (from the task instance's start and end in
the metadata DB), over N runs each (alternating), and their ratios. Then the log throughput of
a container printing 200,000 lines (lines per second of task duration) under each operator.

Usage: python benchmarks/docker_overhead.py [--runs 5] [--log-runs 2] [--lines 200000]
Needs a Docker engine and the image ``mlops-base:bookworm`` (scripts/ci/build_base_image.sh).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
VENV_BIN = Path(sys.executable).parent

DAGS = textwrap.dedent(
    """
    from __future__ import annotations
    import pendulum
    from airflow.sdk import dag
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow_mlops_provider.operators.docker import GpuDockerOperator

    SHORT = ["python3", "-c", "print('hello')"]
    LINES = ["python3", "-c", "import sys; sys.stdout.writelines(f'line {{i}}\\\\n' for i in range({lines}))"]
    ARGS = dict(image="{image}", mount_tmp_dir=False)

    def make(dag_id, cls, command, **extra):
        @dag(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False)
        def d():
            cls(task_id="run", command=command, **ARGS, **extra)
        return d()

    make("bench_stock", DockerOperator, SHORT, auto_remove="force")
    make("bench_gpu", GpuDockerOperator, SHORT)
    make("bench_stock_logs", DockerOperator, LINES, auto_remove="force")
    make("bench_gpu_logs", GpuDockerOperator, LINES)
    """
)


def run_dag(dag_id: str, env: dict[str, str], home: Path) -> tuple[float, float]:
    """Return (wall seconds of `airflow dags test`, task duration seconds)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), "dags", "test", dag_id],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dags test {dag_id} failed:\n{proc.stderr[-3000:]}")
    db = sqlite3.connect(str(home / "airflow.db"))
    (start, end) = db.execute(
        "SELECT start_date, end_date FROM task_instance WHERE dag_id = ? ORDER BY end_date DESC LIMIT 1",
        (dag_id,),
    ).fetchone()
    db.close()
    from datetime import datetime

    duration = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return wall, duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--log-runs", type=int, default=2)
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-airflow-home-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "bench.py").write_text(DAGS.format(image=IMAGE, lines=args.lines))
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__MLOPS__GPU_LEASE_DIR=str(home / "leases"),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)

    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.runs):
        for dag_id in ("bench_stock", "bench_gpu"):
            results.setdefault(dag_id, []).append(run_dag(dag_id, env, home))
    print(f"Same short container, {args.runs} runs each, inside `airflow dags test`:")
    medians = {}
    for dag_id, label in (("bench_stock", "DockerOperator"), ("bench_gpu", "GpuDockerOperator")):
        walls = [w for w, _ in results[dag_id]]
        tasks = [d for _, d in results[dag_id]]
        medians[dag_id] = (statistics.median(walls), statistics.median(tasks))
        print(
            f"  {label:18s} dags test median {medians[dag_id][0]:7.2f}s   task median {medians[dag_id][1]:6.2f}s"
        )
    print(
        f"  ratio GpuDockerOperator / DockerOperator: dags test {medians['bench_gpu'][0] / medians['bench_stock'][0]:.3f}"
        f"   task {medians['bench_gpu'][1] / medians['bench_stock'][1]:.3f}   (target <= 1.05)"
    )

    print(f"Log throughput, a container printing {args.lines:,} lines, {args.log_runs} runs each:")
    throughput = {}
    for dag_id, label in (("bench_stock_logs", "DockerOperator"), ("bench_gpu_logs", "GpuDockerOperator")):
        durations = [run_dag(dag_id, env, home)[1] for _ in range(args.log_runs)]
        best = statistics.median(durations)
        throughput[dag_id] = args.lines / best
        print(f"  {label:18s} task median {best:6.2f}s   {throughput[dag_id]:10,.0f} lines/s")
    print(
        f"  ratio GpuDockerOperator / DockerOperator lines/s: "
        f"{throughput['bench_gpu_logs'] / throughput['bench_stock_logs']:.3f}   (target >= 1.0)"
    )


if __name__ == "__main__":
    main()
