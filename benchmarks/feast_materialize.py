"""One ``feast materialize`` CLI call vs our per-view fan-out run by a real Airflow scheduler.

Data: 1,000,000 rows over 4 feature views (250,000 each), generated to parquet by
``tests/support/feast_repo.py``; file registry, local provider, and a SQLite online store (one
file per side) or, with ``--online-store redis``, Redis (Debian's ``redis-server``, one server
per side, started by the script). Both sides get their own copy of the repo (same parquet
files) and the same window.

- **CLI**: ``feast materialize START END`` (the 4 views one after another, in one process).
- **Ours**: a DAG with ``FeastMaterializeOperator.partial(...).expand_kwargs(...)`` over
  ``per_feature_view(views, groups=2)`` (the window in each item), run by a real ``airflow scheduler``
  (LocalExecutor, ``parallelism=2``) with ``airflow api-server`` and ``airflow dag-processor``:
  2 Airflow tasks in parallel, 2 feature views each, ``online_write_batch_size=10000``.

Figures printed:

- wall seconds and source rows/s (rows read from the offline store per second) of each side;
  ours over the task window (first task start -> last task end, from the metadata DB) and
  over the whole DAG run (including scheduling latency);
- the speed-up (CLI wall / ours task-window wall; target >= 1.5x on 2 cores);
- peak RSS: CLI = ``ru_maxrss`` of the CLI process (``os.wait4``) and the peak of its sampled
  process tree; ours = the peak, over /proc samples every 50 ms, of the summed RSS of the
  running task processes plus their Airflow supervisor processes, and the sum of each task
  process's own peak (VmHWM) as an upper bound. Scheduler, API server and DAG processor are
  not counted (they exist whatever the tasks do). Target: ours <= CLI.

- where each of our tasks spent its time: Airflow's task runner until the DAG file was parsed,
  until ``execute()``, importing feast and building the store, materializing the views, and
  after ``execute()`` (task start/end from the metadata DB, the rest from the task's own clock).

The two online stores are compared at the end (they must be identical).

Usage: ``.venv/bin/python benchmarks/feast_materialize.py [--rows 1000000] [--views 4]
[--online-store sqlite|redis]``
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.feast_repo import (  # noqa: E402
    FeatureRepo,
    create_feature_repo,
    feature_store_yaml,
    sqlite_online_snapshot,
)
from tests.support.redis_server import RedisServer, start_redis_server  # noqa: E402

VENV_BIN = Path(sys.executable).parent
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
END = datetime(2024, 1, 3, tzinfo=timezone.utc)

DAG_TEMPLATE = '''
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from airflow.sdk import dag

# In a task process: when the task runner had parsed this file.
_PARSED_AT = time.time()

from airflow_mlops_provider.operators.feast import FeastMaterializeOperator, per_feature_view


def _vmhwm_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class MeasuredMaterialize(FeastMaterializeOperator):
    """Our operator, plus a record of this task process's pid and peak RSS for the benchmark."""

    def execute(self, context):
        execute_at = time.time()
        index = context["ti"].map_index
        out = super().execute(context)
        record = {{
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "vmhwm_kb": _vmhwm_kb(),
            "summary": out,
            "map_index": index,
            "parsed_at": _PARSED_AT,
            "execute_at": execute_at,
            "done_at": time.time(),
        }}
        Path({results!r}, f"task-{{index}}.json").write_text(json.dumps(record))
        return out


@dag(dag_id="feast_bench", schedule=None, catchup=False, max_active_tasks={tasks})
def feast_bench():
    # The window goes in expand_kwargs: in partial(), start_date is Airflow's task start date.
    MeasuredMaterialize.partial(
        task_id="materialize",
        feast_conn_id="feast_bench",
        online_write_batch_size={batch},
    ).expand_kwargs(
        [
            {{"feature_views": views, "start_date": {start!r}, "end_date": {end!r}}}
            for views in per_feature_view({views!r}, groups={tasks})
        ]
    )


feast_bench()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- /proc sampling -------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, rss_kb)} of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = rss = 0
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
            table[int(entry)] = (ppid, rss)
        except (OSError, ValueError):
            continue
    return table


def _descendants(table: dict[int, tuple[int, int]], roots: set[int]) -> set[int]:
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


class Sampler(threading.Thread):
    """Every ``interval`` s, record {pid: (ppid, rss_kb)} of the process trees under ``roots``."""

    def __init__(self, roots: set[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.samples: list[dict[int, tuple[int, int]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            table = _proc_table()
            tree = _descendants(table, {r for r in self.roots if r in table})
            self.samples.append({pid: table[pid] for pid in tree})
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak_tree_kb(self) -> int:
        return max((sum(rss for _, rss in s.values()) for s in self.samples), default=0)

    def peak_of(self, pids: set[int]) -> int:
        return max((sum(rss for pid, (_, rss) in s.items() if pid in pids) for s in self.samples), default=0)


# --- the two sides --------------------------------------------------------------------------


def feast(repo: Path, *args: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "feast"), "--chdir", str(repo), *args], check=True, capture_output=True, timeout=900
    )


def run_cli(repo: Path) -> dict:
    cmd = [str(VENV_BIN / "feast"), "--chdir", str(repo), "materialize", START.isoformat(), END.isoformat()]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler = Sampler({proc.pid})
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    sampler.stop()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"feast materialize failed with {status}")
    return {"wall": wall, "maxrss_kb": usage.ru_maxrss, "tree_peak_kb": sampler.peak_tree_kb()}


def run_airflow(repo, views: list[str], tasks: int, batch: int, work: Path) -> dict:
    home = work / "airflow-home"
    dags = home / "dags"
    results = work / "task-results"
    for d in (dags, results):
        d.mkdir(parents=True, exist_ok=True)
    (dags / "feast_bench.py").write_text(
        DAG_TEMPLATE.format(
            results=str(results),
            tasks=tasks,
            start=START.isoformat(),
            end=END.isoformat(),
            batch=batch,
            views=views,
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(tasks),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_FEAST_BENCH": repo.connection_json(),
    }
    airflow = str(VENV_BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=900)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    components = {}
    for name, args in (
        ("api-server", ["api-server", "--port", str(port), "--host", "127.0.0.1"]),
        ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]),
    ):
        log = open(logs / f"{name}.log", "wb")
        components[name] = subprocess.Popen(
            [airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    db = home / "airflow.db"
    try:
        _wait(
            lambda: _query(db, "SELECT 1 FROM serialized_dag WHERE dag_id='feast_bench'"), 600, "DAG parsed"
        )
        sampler = Sampler({components["scheduler"].pid})
        sampler.start()
        subprocess.run([airflow, "dags", "trigger", "feast_bench"], env=env, check=True, capture_output=True)
        _wait(
            lambda: _query(
                db, "SELECT 1 FROM dag_run WHERE dag_id='feast_bench' AND state IN ('success','failed')"
            ),
            1800,
            "DAG run finished",
        )
        sampler.stop()
        (state, run_start, run_end) = _query(
            db, "SELECT state, start_date, end_date FROM dag_run WHERE dag_id='feast_bench'"
        )[0]
        tis = _query(
            db,
            "SELECT map_index, state, start_date, end_date FROM task_instance WHERE dag_id='feast_bench'",
        )
    finally:
        for proc in components.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in components.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if state != "success":
        raise SystemExit(f"the Airflow DAG run ended {state}; logs in {logs} and {home / 'logs'}")
    records = [json.loads(p.read_text()) for p in sorted(results.glob("task-*.json"))]
    task_pids = {r["pid"] for r in records}
    supervisor_pids = {r["ppid"] for r in records}
    starts = [_ts(t[2]) for t in tis]
    ends = [_ts(t[3]) for t in tis]
    return {
        "task_window": max(ends) - min(starts),
        "dag_run": _ts(run_end) - _ts(run_start),
        "tasks": [(t[0], round(_ts(t[3]) - _ts(t[2]), 1)) for t in sorted(tis)],
        "peak_tasks_kb": sampler.peak_of(task_pids),
        "peak_tasks_and_supervisors_kb": sampler.peak_of(task_pids | supervisor_pids),
        "sum_task_vmhwm_kb": sum(r["vmhwm_kb"] for r in records),
        "max_task_vmhwm_kb": max(r["vmhwm_kb"] for r in records),
        "rows_written": sum(v["rows"] for r in records for v in r["summary"].values()),
        "view_seconds": {k: v["seconds"] for r in records for k, v in r["summary"].items()},
        "phases": _phases(tis, records),
    }


def _phases(tis: list[tuple], records: list[dict]) -> dict[int, dict[str, float]]:
    """Where each task's time went, from the metadata DB's start/end and the task's own clocks."""
    by_index = {r["map_index"]: r for r in records}
    phases = {}
    for map_index, _, start, end in tis:
        r = by_index[map_index]
        views = sum(v["seconds"] for v in r["summary"].values())
        phases[map_index] = {
            "task runner until the DAG file was parsed": r["parsed_at"] - _ts(start),
            "parsed until execute()": r["execute_at"] - r["parsed_at"],
            "import feast, build the store": r["done_at"] - r["execute_at"] - views,
            "materialize the views": views,
            "after execute() until the task ended": _ts(end) - r["done_at"],
        }
    return phases


def _ts(value: str) -> float:
    """Seconds since the epoch of a metadata DB timestamp (UTC, naive or not)."""
    parsed = datetime.fromisoformat(value.replace(" ", "T"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for: {what}")


def redis_snapshot(server: RedisServer) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash in the server: what Feast's Redis online store holds."""
    import redis

    client = redis.Redis(host=server.host, port=server.port, password=server.password)
    try:
        keys = list(client.scan_iter(count=10_000))
        snapshot: dict[bytes, dict[bytes, bytes]] = {}
        for i in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[i : i + 1000]:
                pipe.hgetall(key)
            snapshot.update(zip(keys[i : i + 1000], pipe.execute()))
        return snapshot
    finally:
        client.close()


def point_at_redis(repo: FeatureRepo, server: RedisServer) -> None:
    """Rewrite the copy's feature_store.yaml so its online store is ``server``."""
    repo.redis_connection_string = server.connection_string()
    repo.yaml_path.write_text(
        feature_store_yaml(
            repo.project, online_store="redis", redis_connection_string=repo.redis_connection_string
        )
    )


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=2, help="parallel Airflow tasks (and parallelism)")
    parser.add_argument("--batch", type=int, default=10_000, help="online_write_batch_size of ours")
    parser.add_argument("--online-store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="feast-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; {os.cpu_count()} CPUs; load average {_load()}", flush=True)
    servers: dict[str, RedisServer] = {}
    if args.online_store == "redis":
        servers = {side: start_redis_server() for side in ("cli", "ours")}
    try:
        run(args, work, servers)
    finally:
        for server in servers.values():
            server.stop()
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, servers: dict[str, RedisServer]) -> None:
    redis = args.online_store == "redis"
    source = create_feature_repo(
        work / "source",
        rows=args.rows,
        n_views=args.views,
        n_entities=args.entities,
        start=START,
        end=END,
        online_store=args.online_store,
        redis_connection_string=servers["cli"].connection_string() if redis else None,
    )
    cli_repo = source.copy_to(work / "cli")
    our_repo = source.copy_to(work / "ours")
    if redis:
        point_at_redis(cli_repo, servers["cli"])
        point_at_redis(our_repo, servers["ours"])
    for repo in (cli_repo, our_repo):
        feast(repo.path, "apply")
    print(
        f"{source.total_rows:,} rows over {args.views} feature views; window {START} .. {END}; "
        f"online store {args.online_store}",
        flush=True,
    )

    cli = run_cli(cli_repo.path)
    print(f"CLI done in {cli['wall']:.1f} s; load average {_load()}", flush=True)
    ours = run_airflow(our_repo, source.feature_views, args.tasks, args.batch, work)
    print(f"Airflow done; load average {_load()}", flush=True)

    if redis:
        identical = redis_snapshot(servers["cli"]) == redis_snapshot(servers["ours"])
    else:
        identical = sqlite_online_snapshot(cli_repo) == sqlite_online_snapshot(our_repo)
    rows = source.total_rows
    mb = 1024.0
    print()
    print(f"{'':<44}{'wall s':>9}{'rows/s':>12}")
    print(f"{'feast materialize (CLI, 1 process)':<44}{cli['wall']:>9.1f}{rows / cli['wall']:>12,.0f}")
    print(
        f"{f'ours, {args.tasks} parallel tasks (task window)':<44}"
        f"{ours['task_window']:>9.1f}{rows / ours['task_window']:>12,.0f}"
    )
    print(
        f"{'ours, whole DAG run (incl. scheduling)':<44}{ours['dag_run']:>9.1f}{rows / ours['dag_run']:>12,.0f}"
    )
    print(
        f"speed-up (CLI wall / ours task window): {cli['wall'] / ours['task_window']:.2f}x (target >= 1.5x)"
    )
    print(f"speed-up (CLI wall / ours whole DAG run): {cli['wall'] / ours['dag_run']:.2f}x")
    print(f"task durations (map_index, s): {ours['tasks']}")
    print(f"materialize seconds per view inside the tasks: {ours['view_seconds']}")
    for map_index, parts in sorted(ours["phases"].items()):
        print(f"task {map_index}: " + "; ".join(f"{name} {sec:.1f} s" for name, sec in parts.items()))
    print()
    print(f"peak RSS CLI process (ru_maxrss):                  {cli['maxrss_kb'] / mb:8.0f} MiB")
    print(f"peak RSS CLI process tree (sampled):               {cli['tree_peak_kb'] / mb:8.0f} MiB")
    print(f"peak RSS ours, task processes (sampled sum):       {ours['peak_tasks_kb'] / mb:8.0f} MiB")
    print(
        f"peak RSS ours, tasks + supervisors (sampled sum):  {ours['peak_tasks_and_supervisors_kb'] / mb:8.0f} MiB"
    )
    print(f"peak RSS ours, sum of task VmHWM (upper bound):    {ours['sum_task_vmhwm_kb'] / mb:8.0f} MiB")
    print(f"peak RSS ours, largest single task (VmHWM):        {ours['max_task_vmhwm_kb'] / mb:8.0f} MiB")
    print(f"online rows written by ours: {ours['rows_written']:,}; stores identical: {identical}")


if __name__ == "__main__":
    main()
