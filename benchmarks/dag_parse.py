"""Parse time of the example DAGs, as the DAG processor pays it, with Airflow already imported.

For each file in ``dags/``: a fresh process imports ``airflow.sdk`` (the DAG processor has it
loaded), then times ``DagBag`` parsing that one file. Prints the median of 5 runs per file and
the heavy libraries the parse imported (there should be none but the runtime's own client).

    .venv/bin/python benchmarks/dag_parse.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("mlflow", "feast", "pandas", "pyarrow", "numpy", "sklearn", "docker", "kubernetes")
PROBE = f"""
import json, sys, time
import airflow.sdk
from airflow.models.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "dags": sorted(bag.dag_ids), "errors": list(bag.import_errors.values()),
                  "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def main() -> int:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="parse-bench-"))
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["PYTHONPATH"] = str(REPO / "dags")
    files = sorted(p for p in (REPO / "dags").glob("*.py"))
    print(f"{'DAG file':40} {'runtime':8} {'median s':>9}  heavy modules imported")
    for runtime in ("docker", "local"):
        for path in files:
            samples, last = [], {}
            for _ in range(5):
                out = subprocess.run(
                    [sys.executable, "-c", PROBE, str(path)],
                    env={**env, "AIRFLOW__MLOPS__RUNTIME": runtime, "MLOPS_EXAMPLE_RUNTIME": runtime},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                last = json.loads(out.stdout.strip().splitlines()[-1])
                if last["errors"]:
                    print(f"{path.name}: import errors {last['errors']}")
                    return 1
                samples.append(last["seconds"])
            print(f"{path.name:40} {runtime:8} {statistics.median(samples):9.3f}  {last['heavy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
