"""The MLOps views: time to first render in Chromium at scale, and what the plugin costs the UI.

Everything is real and on loopback, in a throw-away Airflow home (SQLite):

- an ``mlflow server`` with one registered model of ``--versions`` (1,000) versions, each tagged
  as our operators tag them (``airflow.dag_id``/``run_id``/``task_id``, every tenth with
  ``airflow.promotion.*`` decision tags), and the ``champion`` alias;
- a sweep of ``--trials`` (500) trivial trials, one real ``airflow dags test`` run of a batched
  ``plan_sweep`` -> ``trial_task.expand_kwargs`` -> ``select_best_trial`` DAG;
- a Feast repo (local provider, SQLite online store) with ``--views`` (50) feature views,
  applied and materialized;
- ``airflow api-server`` (one worker) with a SimpleAuthManager user; Debian's Chromium
  (Playwright, ``executable_path``) signed in through Airflow's login form.

Figures:

1. time to first render of each view, loaded as a page by Chromium: navigation start to first
   contentful paint (the pages are server-rendered, no script), median of ``--repeat`` loads
   after one warm-up load (the first load, printed apart, includes the plugin's lazy imports);
2. ``api-server`` start-up (spawn to ``/api/v2/monitor/health`` answering) and the load of the
   Airflow UI's DAG list (navigation start to the DAG's name shown), with and without the plugin,
   alternating ``--rounds`` times. "Without" runs the same installation with the ``mlops`` entry
   point of the ``airflow.plugins`` group hidden by a ``sitecustomize`` on ``PYTHONPATH``.

Goals (issue 16): each view under 1 s on 2 cores; the plugin's cost within noise.

Usage: ``.venv/bin/python benchmarks/plugin_views.py [--quick]`` (about 6 min on 2 cores;
``--quick``: 200 versions, 100 trials, 10 views, 2 rounds: about 3 min).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO_ROOT))

MODEL = "bench_model"
SWEEP_DAG = "bench_plugin_sweep"
DAG_FILE = textwrap.dedent(
    f"""
    import pendulum
    from airflow.sdk import dag

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial, trial_task

    SPACE = {{"lr": {{"low": 1e-4, "high": 1.0, "log": True}}, "depth": [2, 4, 8, 16], "width": {{"low": 8, "high": 512}}}}


    @trial_task
    def trivial(lr, depth, width):
        return {{"loss": (lr - 0.01) ** 2 + depth / 100 + width / 1e4}}


    @dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), params=sweep_params(search_space=SPACE, n_trials=10))
    def {SWEEP_DAG}():
        batches = plan_sweep()
        select_best_trial(trivial.expand_kwargs(batches), batches)


    {SWEEP_DAG}()
    """
)
#: Hides the ``mlops`` entry point of the ``airflow.plugins`` group (the "without" variant).
SITECUSTOMIZE = textwrap.dedent(
    """
    import importlib.metadata as _md

    _distributions = _md.distributions


    class _WithoutPlugin(_md.Distribution):
        def __init__(self, dist):
            self._dist = dist

        def read_text(self, filename):
            return self._dist.read_text(filename)

        def locate_file(self, path):
            return self._dist.locate_file(path)

        @property
        def entry_points(self):
            return _md.EntryPoints(e for e in self._dist.entry_points if e.group != "airflow.plugins")


    def distributions(**kwargs):
        for dist in _distributions(**kwargs):
            name = (dist.metadata["Name"] or "").replace("_", "-").lower()
            yield _WithoutPlugin(dist) if name == "airflow-mlops-provider" else dist


    _md.distributions = distributions
    """
)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def populate_registry(url: str, versions: int) -> None:
    """One model with ``versions`` versions, tagged as our operators tag them; ``champion`` on the newest."""
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # one "waiting for creation" line a version
    client = MlflowClient(url)
    experiment = client.create_experiment(f"bench-{time.time_ns()}")
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL, description="benchmark model")
    source = f"{run.info.artifact_uri}/model"
    for i in range(1, versions + 1):
        tags = {
            "airflow.dag_id": "mlops_training_pipeline",
            "airflow.task_id": "register",
            "airflow.run_id": f"scheduled__2024-01-{i:05d}",
        }
        if i % 10 == 0:
            tags.update(
                {
                    "airflow.promotion.decision": "promote" if i % 20 == 0 else "keep",
                    "airflow.promotion.metric": "test_auc",
                    "airflow.promotion.mode": "max",
                    "airflow.promotion.alias": "champion",
                    "airflow.promotion.challenger_value": repr(0.8 + i / 1e5),
                    "airflow.promotion.champion_value": repr(0.8 + (i - 10) / 1e5),
                    "airflow.promotion.champion_version": str(i - 10),
                    "airflow.promotion.delta": repr(10 / 1e5),
                    "airflow.promotion.min_delta": "0.0",
                }
            )
        client.create_model_version(MODEL, source, run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias(MODEL, "champion", str(versions))


def populate_features(repo_dir: Path, views: int, env: dict[str, str]) -> Path:
    """A Feast repo of ``views`` feature views, applied and materialized over its data's window."""
    from tests.support.feast_repo import create_feature_repo

    repo = create_feature_repo(repo_dir, project="bench_plugin", n_views=views, rows=200, n_entities=20)
    feast = str(VENV_BIN / "feast")
    _run([feast, "-c", str(repo.path), "apply"], env)
    _run(
        [feast, "-c", str(repo.path), "materialize", repo.start.isoformat(), repo.end.isoformat()],
        env,
        timeout=1800,
    )
    return repo.path


def run_sweep(home: Path, trials: int, env: dict[str, str]) -> str:
    (home / "dags").mkdir(exist_ok=True)
    (home / "dags" / "bench_plugin_sweep.py").write_text(DAG_FILE)
    out = _run(
        [str(VENV_BIN / "airflow"), "dags", "test", SWEEP_DAG, "--conf", json.dumps({"n_trials": trials})],
        env,
    )
    if "state=success" not in out:
        raise SystemExit(f"the sweep run did not succeed:\n{out[-3000:]}")
    import sqlite3

    db = sqlite3.connect(home / "airflow.db")
    try:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (SWEEP_DAG,)
        ).fetchone()
    finally:
        db.close()
    return str(row[0])


class ApiServer:
    """``airflow api-server`` on a free port; :attr:`startup` is spawn-to-healthy seconds."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        from tests.support.ports import free_port

        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        env = dict(env, AIRFLOW__API__BASE_URL=self.root)
        started = time.perf_counter()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(VENV_BIN / "airflow"),
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            try:
                with urllib.request.urlopen(f"{self.root}/api/v2/monitor/health", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit(f"api-server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.05)
        self.startup = time.perf_counter() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def first_render(page: Any, url: str) -> float:
    """Seconds from navigation start to first contentful paint of ``url``."""
    answer = page.goto(url, wait_until="load")
    if answer is None or answer.status != 200:
        raise SystemExit(f"{url} answered {answer.status if answer else 'nothing'}")
    paint = page.evaluate(
        "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null"
    )
    if paint is None:  # no paint entry: fall back to the load event
        paint = page.evaluate("() => performance.getEntriesByType('navigation')[0].loadEventEnd")
    return float(paint) / 1000


def ui_dag_list_load(page: Any, root: str, dag_id: str) -> float:
    started = time.perf_counter()
    page.goto(f"{root}/dags")
    page.get_by_text(dag_id).first.wait_for(timeout=60_000)
    return time.perf_counter() - started


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and 2 rounds")
    parser.add_argument("--versions", type=int, default=None, help="model versions (default 1000)")
    parser.add_argument("--trials", type=int, default=None, help="sweep trials (default 500)")
    parser.add_argument("--views", type=int, default=None, help="feature views (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="loads of each view after the warm-up")
    parser.add_argument("--rounds", type=int, default=None, help="with/without plugin rounds (default 4)")
    args = parser.parse_args()
    versions = args.versions or (200 if args.quick else 1000)
    trials = args.trials or (100 if args.quick else 500)
    views = args.views or (10 if args.quick else 50)
    rounds = args.rounds or (2 if args.quick else 4)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        print("Debian's chromium is needed: apt-get install -y chromium", file=sys.stderr)
        return 2

    from tests.support.mlflow_server import start_mlflow_server

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-plugin-"))
    home = work / "airflow"
    home.mkdir()
    server = start_mlflow_server(work / "mlflow")
    servers: list[ApiServer] = []
    try:
        base_env = _env(home)
        print(
            f"populating: {versions} model versions, a {trials}-trial sweep, {views} feature views",
            flush=True,
        )
        t = time.perf_counter()
        _run([str(VENV_BIN / "airflow"), "db", "migrate"], base_env)
        populate_registry(server.url, versions)
        repo = populate_features(work / "features", views, base_env)
        run_id = run_sweep(home, trials, base_env)
        print(f"populated in {time.perf_counter() - t:.0f}s", flush=True)
        env = _env(
            home,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="alice:admin",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps({"conn_type": "mlflow", "host": server.url}),
            AIRFLOW_CONN_FEAST_DEFAULT=json.dumps({"conn_type": "feast", "extra": {"repo_path": str(repo)}}),
        )
        hidden = work / "without-plugin"
        hidden.mkdir()
        (hidden / "sitecustomize.py").write_text(SITECUSTOMIZE)
        without_env = dict(
            env, PYTHONPATH=os.pathsep.join(filter(None, [str(hidden), env.get("PYTHONPATH")]))
        )

        from playwright.sync_api import sync_playwright

        sys.path.insert(0, str(REPO_ROOT / "scripts"))
        import screenshots as ui  # the UI helpers of scripts/screenshots.py

        startup: dict[str, list[float]] = {"with": [], "without": []}
        dag_list: dict[str, list[float]] = {"with": [], "without": []}
        views_first: dict[str, float] = {}
        views_warm: dict[str, list[float]] = {}
        pages = {
            f"Models: model page ({min(versions, 50)} of {versions} versions, newest first)": f"/mlops/models/mlflow_default/{MODEL}",
            "Models: list": "/mlops/models",
            f"Sweep: {trials} trials": f"/mlops/sweeps/{SWEEP_DAG}/{run_id}",
            f"Features: {views} feature views": "/mlops/features",
            "GPUs": "/mlops/gpus",
        }
        with sync_playwright() as pw:
            browser = ui.launch(pw)
            for n in range(rounds):
                for variant, variant_env in (
                    (("with", env), ("without", without_env))
                    if n % 2 == 0
                    else (("without", without_env), ("with", env))
                ):
                    api = ApiServer(variant_env, work / f"api-server-{variant}-{n}.log")
                    servers.append(api)
                    startup[variant].append(api.startup)
                    password = json.loads(
                        (home / "simple_auth_manager_passwords.json.generated").read_text()
                    )["alice"]
                    context = browser.new_context(viewport={"width": 1440, "height": 1000})
                    page = context.new_page()
                    ui.sign_in(page, api.root, "alice", password)
                    ui_dag_list_load(page, api.root, SWEEP_DAG)  # the UI's assets into the cache
                    dag_list[variant].append(ui_dag_list_load(page, api.root, SWEEP_DAG))
                    if variant == "with" and not views_first:
                        for name, path in pages.items():
                            views_first[name] = first_render(page, api.root + path)
                            views_warm[name] = [
                                first_render(page, api.root + path) for _ in range(args.repeat)
                            ]
                    context.close()
                    api.stop()
            browser.close()

        print()
        print(f"Time to first render in Chromium (FCP), {os.cpu_count()} cores, backends on loopback:")
        print(f"  {'view':<58} {'first load':>10} {'median':>8} {'max':>8}  goal < 1 s")
        for name in pages:
            warm = views_warm[name]
            print(f"  {name:<58} {views_first[name]:>9.3f}s {_median(warm):>7.3f}s {max(warm):>7.3f}s")
        print()
        print(f"What the plugin adds ({rounds} alternating rounds, median and spread):")
        for label, data in (("api-server start-up", startup), ("Airflow UI DAG list load", dag_list)):
            w, wo = _median(data["with"]), _median(data["without"])
            spread = max(data["with"] + data["without"]) - min(data["with"] + data["without"])
            print(
                f"  {label:<28} with {w:6.2f}s  without {wo:6.2f}s  ratio {w / wo:5.2f}  "
                f"(all runs {', '.join(f'{v:.2f}' for v in data['with'] + data['without'])}; spread {spread:.2f}s)"
            )
        return 0
    finally:
        for api in servers:
            api.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
