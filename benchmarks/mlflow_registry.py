"""Register + alias through the provider's operators vs raw ``MlflowClient`` calls.

Both paths run against the same real ``mlflow server`` (SQLite backend, local artifacts),
started here on a free loopback port unless ``--url`` names one. Each iteration registers one
new version of a tiny scikit-learn model and points the ``champion`` alias at it:

- raw:        ``MlflowClient(url)``; ``create_model_version``; ``set_registered_model_alias``
- operator:   ``MlflowRegisterModelOperator(alias="champion").execute(context)``
- operators:  ``MlflowRegisterModelOperator`` then ``MlflowSetAliasOperator``

Each path builds its client (or operator and hook) inside the timed section, as a task does.
Iterations alternate between the paths so load drifts hit all of them alike.

Usage: ``.venv/bin/python benchmarks/mlflow_registry.py [--iterations 20] [--url http://...]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


class _TI:
    def __init__(self, run_id: str, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = (
            "bench", task_id, run_id, -1, 1
        )  # fmt: skip

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _context(run_id: str, task_id: str) -> dict[str, Any]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"ti": _TI(run_id, task_id), "outlet_events": OutletEventAccessors()}


def _log_model(url: str) -> tuple[str, str, str]:
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("bench-mlflow-registry")
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with mlflow.start_run() as run:
        mlflow.log_metric("val_auc", 0.8)
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return run.info.run_id, info.model_id, info.model_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--url", help="an mlflow server that already runs (default: start one)")
    args = parser.parse_args()
    if args.iterations < 20:
        parser.error(f"--iterations must be >= 20, got {args.iterations!r}")

    server = None
    url = args.url
    if not url:
        from tests.support.mlflow_server import start_mlflow_server

        started = time.perf_counter()
        server = start_mlflow_server(timeout=300)
        url = server.url
        print(f"mlflow server on {url} (start took {time.perf_counter() - started:.1f} s)")
    try:
        from mlflow import MlflowClient

        from airflow_mlops_provider.operators.mlflow import (
            MlflowRegisterModelOperator,
            MlflowSetAliasOperator,
        )

        host, port = url.removeprefix("http://").rsplit(":", 1)
        os.environ["AIRFLOW_CONN_MLFLOW_BENCH"] = json.dumps(
            {
                "conn_type": "mlflow",
                "host": host,
                "port": int(port),
                "schema": "http",
                "password": "bench-token",
            }
        )
        run_id, model_id, source = _log_model(url)
        suffix = uuid.uuid4().hex[:6]
        names = {path: f"bench-{path}-{suffix}" for path in ("raw", "operator", "operators")}
        setup = MlflowClient(url)
        for name in names.values():
            setup.create_registered_model(name)

        def raw(i: int) -> None:
            client = MlflowClient(url)
            mv = client.create_model_version(names["raw"], source, run_id=run_id, model_id=model_id)
            client.set_registered_model_alias(names["raw"], "champion", mv.version)

        def operator(i: int) -> None:
            MlflowRegisterModelOperator(
                task_id="register",
                model_name=names["operator"],
                source=source,
                run_id=run_id,
                alias="champion",
                mlflow_conn_id="mlflow_bench",
            ).execute(_context(f"run_{i}", "register"))

        def operators(i: int) -> None:
            result = MlflowRegisterModelOperator(
                task_id="register",
                model_name=names["operators"],
                source=source,
                run_id=run_id,
                mlflow_conn_id="mlflow_bench",
            ).execute(_context(f"run_{i}", "register"))
            MlflowSetAliasOperator(
                task_id="alias",
                model_name=names["operators"],
                alias="champion",
                version=result["version"],
                mlflow_conn_id="mlflow_bench",
            ).execute(_context(f"run_{i}", "alias"))

        paths = {"raw": raw, "operator": operator, "operators": operators}
        timings: dict[str, list[float]] = {path: [] for path in paths}
        for i in range(-2, args.iterations):  # two warm-up rounds
            for path, fn in paths.items():
                started = time.perf_counter()
                fn(i)
                if i >= 0:
                    timings[path].append((time.perf_counter() - started) * 1000)

        versions = {path: len(setup.search_model_versions(f"name = '{n}'")) for path, n in names.items()}
        medians = {path: statistics.median(t) for path, t in timings.items()}
        print(f"iterations per path: {args.iterations} (+2 warm-up); versions created: {versions}")
        for path, t in timings.items():
            q = statistics.quantiles(t, n=10)
            print(f"  {path:9s} median {medians[path]:7.1f} ms   p10 {q[0]:7.1f}   p90 {q[-1]:7.1f}")
        print(
            f"ratio register(alias=) operator / raw MlflowClient: {medians['operator'] / medians['raw']:.3f}"
        )
        print(
            f"ratio register + set-alias operators / raw MlflowClient: {medians['operators'] / medians['raw']:.3f}"
        )
        print("target: <= 1.10")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
