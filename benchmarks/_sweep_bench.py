"""Shared by the sweep benchmarks: a throw-away Airflow home, timed ``airflow dags test`` runs, trial phases.

Not a benchmark itself. :class:`BenchHome` writes one DAG file into a fresh ``AIRFLOW_HOME``
(SQLite), migrates it, and runs ``airflow dags test``; :class:`DagRunTimes` holds the wall time of
one run and the start and end of each of its task instances, read from the metadata DB's
``task_instance`` table, so a script can time one phase (e.g. every mapped trial task) of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")

if str(REPO_ROOT) not in sys.path:  # for tests.support (the real mlflow server)
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class DagRunTimes:
    """One DAG run: ``airflow dags test``'s wall time and ``{task_id: [(start, end, state), ...]}``."""

    dag_id: str
    run_id: str
    wall: float
    tasks: dict[str, list[tuple[datetime | None, datetime | None, str | None]]] = field(default_factory=dict)

    def _spans(self, task_ids: tuple[str, ...]) -> Iterator[tuple[datetime, datetime]]:
        for task_id in task_ids:
            for start, end, _ in self.tasks.get(task_id, []):
                if start is not None and end is not None:
                    yield start, end

    def phase(self, *task_ids: str) -> float:
        """Seconds from the first start to the last end of the task instances of ``task_ids`` (0 when none ran)."""
        spans = list(self._spans(task_ids))
        if not spans:
            return 0.0
        return (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()

    def ran(self, task_id: str) -> int:
        """How many task instances of ``task_id`` ran (have a start and an end)."""
        return sum(1 for _ in self._spans((task_id,)))


class BenchHome:
    """
    A throw-away ``AIRFLOW_HOME`` (SQLite) with one DAG file; runs ``airflow dags test`` in it.

    :param dag_text: The DAG file's source.
    :param env: Extra environment for every ``airflow`` command (connections, settings).
    """

    def __init__(self, dag_text: str, env: Mapping[str, str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
        self.home, self.dags = self.root / "home", self.root / "dags"
        self.dags.mkdir(parents=True)
        (self.dags / "bench_dags.py").write_text(dag_text)
        self.env = dict(os.environ)
        self.env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            AIRFLOW__MLOPS__GPU_LEASE_DIR=str(self.root / "leases"),
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.env.update(env or {})
        migrate = self._airflow("db", "migrate", timeout=900)
        if migrate.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")

    def _airflow(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def dags_test(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, *, timeout: float = 900
    ) -> DagRunTimes:
        """Run ``airflow dags test dag_id`` (a new DAG run); exit with its output's tail unless it succeeded."""
        args = ["dags", "test", dag_id]
        if conf:
            args += ["--conf", json.dumps(conf)]
        started = time.perf_counter()
        proc = self._airflow(*args, timeout=timeout)
        wall = time.perf_counter() - started
        db = sqlite3.connect(str(self.home / "airflow.db"))
        try:
            row = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            if proc.returncode != 0 or row is None or row[1] != "success":
                out = proc.stdout + proc.stderr
                raise SystemExit(f"dags test {dag_id} {conf or ''} did not succeed ({row!r}):\n{out[-4000:]}")
            times = DagRunTimes(dag_id=dag_id, run_id=row[0], wall=wall)
            rows = db.execute(
                "SELECT task_id, start_date, end_date, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, row[0]),
            ).fetchall()
        finally:
            db.close()
        for task_id, start, end, state in rows:
            times.tasks.setdefault(task_id, []).append((_when(start), _when(end), state))
        return times

    def xcom(self, run: DagRunTimes, task_id: str, key: str = "return_value") -> Any:
        """Return the (JSON) XCom ``key`` of ``task_id`` in ``run`` (None when absent)."""
        db = sqlite3.connect(str(self.home / "airflow.db"))
        try:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
                (run.dag_id, run.run_id, task_id, key),
            ).fetchone()
        finally:
            db.close()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        """Remove the home, the DAGs and every run's files."""
        shutil.rmtree(self.root, ignore_errors=True)


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def mlflow_conn_env(url: str) -> dict[str, str]:
    """The environment that defines the ``mlflow_default`` connection to the server at ``url``."""
    return {"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": url})}


@contextmanager
def running_mlflow() -> Iterator[Any]:
    """A real ``mlflow server`` (SQLite backend) on a free loopback port; stopped and removed on exit."""
    from tests.support.mlflow_server import start_mlflow_server

    started = time.perf_counter()
    server = start_mlflow_server(timeout=300)
    print(f"mlflow server on {server.url} (start took {time.perf_counter() - started:.1f} s)", flush=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def containers_created(dag_id: str, since: float, until: float) -> int:
    """How many containers of ``dag_id`` (label ``airflow-mlops.dag_id``) the engine created between two times."""
    out = subprocess.run(
        ["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter", "type=container",
         "--filter", "event=create", "--filter", f"label=airflow-mlops.dag_id={dag_id}", "--format", "{{.Actor.ID}}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return len(out.stdout.split())


def mlflow_one_off_seconds() -> tuple[float, float, list[str]]:
    """
    Return the one-off costs of MLflow in a fresh task-like process: ``import mlflow``, the header plugins, their names.

    A process that has imported ``airflow.sdk`` (as a task process has) times ``import mlflow``,
    then the import that ``mlflow.utils.rest_utils.http_request`` makes on the first REST call:
    ``mlflow.tracking.request_header.registry``, which loads every ``mlflow.request_header_provider``
    entry point of the environment (``feast`` registers one; importing feast is slow). Every task
    process that talks to MLflow pays both once; ``airflow dags test`` runs all tasks in one process.
    """
    code = (
        "import time, importlib.metadata as md; import airflow.sdk; t = time.perf_counter(); import mlflow; "
        "print(time.perf_counter() - t); t = time.perf_counter(); import mlflow.tracking.request_header.registry; "
        "print(time.perf_counter() - t); "
        "print(' '.join(e.name for e in md.entry_points(group='mlflow.request_header_provider')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    import_s, plugins_s, *names = out.stdout.strip().splitlines() + [""]
    return float(import_s), float(plugins_s), sorted(names[0].split())


def ratio(a: float, b: float) -> str:
    """``a / b`` to three places, or ``n/a`` when ``b`` is 0."""
    return f"{a / b:.3f}" if b else "n/a"
