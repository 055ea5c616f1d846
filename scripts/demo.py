"""One-command demo: run ``mlops_training_pipeline`` end to end on embedded defaults.

``make demo`` runs this with the project's virtualenv. Everything lands in ``.demo/``:

- Airflow on SQLite (``.demo/airflow``), run through ``airflow dags test``;
- MLflow with a local SQLite store and local artifacts (``.demo/mlflow.db``, ``.demo/mlartifacts``);
- Feast's local provider: parquet offline store, SQLite online store, file registry;
- training in containers when a Docker engine answers (the trainer image is built locally,
  offline), otherwise as local processes (the documented ``local`` runtime), and it says which.

While the pipeline runs it prints one line per finished task instance (task, map index, state,
seconds) and the sweep's progress lines, read from the ``airflow dags test`` output as it comes
(the whole output is kept in ``.demo/pipeline.log``). At the end it prints the trials, the best
trial, the registered version, whether it was promoted, the sweep's MLflow run (every trial is a
child run of it, in the experiment ``mlops_training_pipeline``), and the commands to open the
Airflow and MLflow UIs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
VENV_BIN = Path(sys.executable).parent
#: Where ``mlflow ui`` serves the demo's store, as the demo tells the user to start it.
MLFLOW_UI_PORT = 5000
MLFLOW_UI_URL = f"http://localhost:{MLFLOW_UI_PORT}"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def prepare_trainer_image() -> bool:
    """Build the base and trainer images locally; False (with the reason said) when that fails."""
    image = os.environ.get("MLOPS_TRAINER_IMAGE", "mlops-trainer:latest")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        say(f"trainer image {image} is present")
        return True
    say("building the trainer image offline (debootstrap base + wheelhouse); this takes about a minute")
    for step in (["bash", "scripts/ci/build_base_image.sh"], ["bash", "scripts/ci/build_images.sh"]):
        proc = subprocess.run(step, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            say(f"could not build images ({' '.join(step)} failed: {proc.stderr.strip()[-300:]})")
            return False
    return True


#: One structlog line of ``airflow dags test``: "<timestamp> [<level>] <event> [<logger>] key=value ...".
LOG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\S+Z) \[(?P<level>\w+)\s*\] (?P<event>.*?)\s+\[[\w.]+\](?P<rest>.*)$"
)
TASK_START = re.compile(r"^\[DAG TEST\] starting task_id=(?P<task>\S+) map_index=(?P<index>-?\d+)$")
TASK_END = re.compile(r"^\[DAG TEST\] end task task_id=(?P<task>\S+) map_index=(?P<index>-?\d+)$")
NEW_STATE = re.compile(r"\bnew_state=(?P<state>\w+)")
SKIPPED = re.compile(r"\('(?P<task>[^']+)', (?P<index>-?\d+)\)")
#: Events a task logs that the demo repeats: the sweep's plan, cached and failed trials, progress.
SWEEP_EVENT = re.compile(r"^(Planned \d+ trials|Progress: |Trial \S+ (cached|failed))")


class TaskReporter:
    """
    Read ``airflow dags test`` output line by line; print a line per finished task instance.

    ``dags test`` runs the task instances one at a time and logs ``[DAG TEST] starting`` and
    ``end task`` around each, with the state the task reached in between (``new_state=``);
    tasks a branch skips are named in the branch task's ``Skipping tasks [...]`` line.
    """

    def __init__(self, out: IO[str] = sys.stdout) -> None:
        self.out = out
        self.current: tuple[str, int] | None = None
        self.started_at: datetime | None = None
        self.state: str | None = None
        self.skipped: list[tuple[str, int]] = []
        self.finished: list[tuple[str, int, str, float | None]] = []

    @staticmethod
    def _name(task: str, index: int) -> str:
        return task if index < 0 else f"{task}[{index}]"

    def _print(self, text: str) -> None:
        print(f"[demo]   {text}", file=self.out, flush=True)

    def feed(self, line: str) -> None:
        match = LOG_LINE.match(line.rstrip("\n"))
        if not match:
            return
        event = match["event"].strip()
        when = datetime.fromisoformat(match["ts"].replace("Z", "+00:00"))
        if start := TASK_START.match(event):
            self.current, self.started_at, self.state = (start["task"], int(start["index"])), when, None
        elif end := TASK_END.match(event):
            task, index = end["task"], int(end["index"])
            seconds = (when - self.started_at).total_seconds() if self.started_at else None
            self._finish(task, index, self.state or "unknown", seconds)
            for skipped in self.skipped:  # the tasks this one (a branch) skipped, after it
                self._finish(*skipped, "skipped", None)
            self.current = self.started_at = self.state = None
            self.skipped = []
        elif self.current is not None:
            if state := NEW_STATE.search(match["rest"]):
                self.state = state["state"]
            elif event.startswith("Skipping tasks ["):
                self.skipped += [(m["task"], int(m["index"])) for m in SKIPPED.finditer(event)]
            elif SWEEP_EVENT.match(event):
                self._print(f"  {self._name(*self.current)}: {event}")

    def _finish(self, task: str, index: int, state: str, seconds: float | None) -> None:
        self.finished.append((task, index, state, seconds))
        took = f"{seconds:6.1f}s" if seconds is not None else "      -"
        self._print(f"{self._name(task, index):<28} {state:<15} {took}")


def stream_dags_test(args: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``airflow dags test``, keep its output in ``log_path``, report each finished task; return its exit code."""
    reporter = TaskReporter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=DEMO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            reporter.feed(line)
        return proc.wait()


def sweep_in_mlflow(summary: dict, tracking_uri: str) -> tuple[str, str] | None:
    """
    Return a line on the sweep's MLflow runs and the parent run that holds its trials, or None untracked.

    A trial served from the cache has no run in this sweep: its record names the run of the
    earlier sweep that trained it, whose parent is then the one to look at.
    """
    info = summary.get("mlflow") or {}
    if not info.get("parent_run_id"):
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    children = client.search_runs(
        [info["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{info['parent_run_id']}'",
        max_results=1000,
    )
    line = (
        f"experiment {info['experiment_name']!r} (id {info['experiment_id']}), sweep run "
        f"{info['parent_run_id']}: {len(children)} trial runs"
    )
    origins = sorted(
        {
            client.get_run(row["mlflow_run_id"]).data.tags.get("mlflow.parentRunId", "")
            for row in summary["leaderboard"]
            if row.get("cached") and row.get("mlflow_run_id")
        }
        - {""}
    )
    if origins:
        line += (
            f"; {summary['cached_trials']} trials reused from the runs of sweep run(s) {', '.join(origins)}"
        )
    return line, info["parent_run_id"] if children or not origins else origins[0]


def demo_connections(tracking_uri: str, example_home: Path) -> dict[str, str]:
    """
    The demo's ``mlflow_default`` and ``feast_default`` connections, as ``AIRFLOW_CONN_*`` values.

    Every trial of the sweep is a run in the MLflow store ``tracking_uri`` (and the winner's model
    and registry). A ``sqlite:`` store has no UI of its own, so the connection's ``ui_url`` is
    the ``mlflow ui`` the demo tells the user to start (:data:`MLFLOW_UI_URL`): the tasks' extra
    links "MLflow run" and "MLflow model version" point there.
    """
    return {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {"conn_type": "mlflow", "extra": {"tracking_uri": tracking_uri, "ui_url": MLFLOW_UI_URL}}
        ),
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(
            {"conn_type": "feast", "extra": {"repo_path": str(example_home / "feature_repo")}}
        ),
    }


def last_monday() -> datetime:
    now = datetime.now(timezone.utc)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return monday


def main() -> int:
    started = time.time()
    DEMO.mkdir(exist_ok=True)
    airflow_home = DEMO / "airflow"
    example_home = DEMO / "example"
    if docker_answers() and prepare_trainer_image():
        runtime = "docker"
        say("a Docker engine answers: each trial runs in its own container (GpuDockerOperator)")
    else:
        runtime = "local"
        say(
            "no usable Docker engine: trials run as local processes (runtime 'local', "
            "LocalProcessOperator); install Docker and rerun to train in containers"
        )
    tracking_uri = f"sqlite:///{DEMO / 'mlflow.db'}"
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # INFO: the task start/end lines and the sweep's progress the demo reports.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "MLOPS_EXAMPLE_HOME": str(example_home),
            "MLOPS_EXAMPLE_RUNTIME": runtime,
            **demo_connections(tracking_uri, example_home),
        }
    )
    airflow = str(VENV_BIN / "airflow")
    say("migrating the Airflow metadata database (SQLite)")
    subprocess.run([airflow, "db", "migrate"], env=env, cwd=DEMO, check=True, capture_output=True)
    logical_date = last_monday()
    say(f"running mlops_training_pipeline for the week ending {logical_date:%Y-%m-%d} (airflow dags test)")
    log_path = DEMO / "pipeline.log"
    say(f"each task instance is printed as it finishes; the whole output goes to {log_path}")
    returncode = stream_dags_test(
        [airflow, "dags", "test", "mlops_training_pipeline", logical_date.isoformat()], env, log_path
    )
    summary_path = example_home / "summary.json"
    if returncode != 0 or not summary_path.exists():
        say(f"the pipeline failed; its log is {log_path}")
        print(log_path.read_text()[-4000:])
        return 1
    summary = json.loads(summary_path.read_text())
    if summary["promoted"]:
        say("the champion moved: running mlops_deploy_on_new_champion (what its Asset schedule triggers)")
        deployed = stream_dags_test(
            [airflow, "dags", "test", "mlops_deploy_on_new_champion", datetime.now(timezone.utc).isoformat()],
            env,
            DEMO / "deploy.log",
        )
        if deployed != 0:
            say(f"the deployment DAG failed; its log is {DEMO / 'deploy.log'}")
            return 1
    sweep = sweep_in_mlflow(summary, tracking_uri)
    print()
    print("=" * 72)
    print(f"mlops_training_pipeline: success in {time.time() - started:.0f}s (runtime: {runtime})")
    print(
        f"trials:              {summary['trials']} ({summary['successful_trials']} succeeded, "
        f"{summary.get('cached_trials', 0)} reused from the MLflow cache)"
    )
    print(
        f"best trial:          {summary['best_trial']} family {summary['best_family']} "
        f"params {summary['best_params']} test AUC {summary['test_auc']:.4f}"
    )
    print("leaderboard (validation AUC):")
    for row in summary["leaderboard"][:8]:
        auc = (row.get("metrics") or {}).get("val_auc")
        cached = " (cached)" if row.get("cached") else ""
        print(f"  #{row.get('rank')}: {row['trial_id']} {row['hparams']} val_auc={auc}{cached}")
    if sweep:
        print(f"MLflow:              {sweep[0]}")
    print(f"registered version:  churn_classifier v{summary['registered_version']}")
    print(
        f"promoted:            {'yes, now champion and production' if summary['promoted'] else 'no, champion kept'}"
    )
    print()
    print("Open the UIs:")
    print(
        f"  Airflow: AIRFLOW_HOME={airflow_home} AIRFLOW__CORE__DAGS_FOLDER={REPO / 'dags'} "
        f"{VENV_BIN / 'airflow'} standalone   # http://localhost:8080"
    )
    print(
        f"  MLflow:  cd {DEMO} && {VENV_BIN / 'mlflow'} ui --backend-store-uri sqlite:///mlflow.db "
        f"--port {MLFLOW_UI_PORT}   # {MLFLOW_UI_URL} (the tasks' MLflow links point there)"
    )
    if sweep:
        print(
            f"           the trials: {MLFLOW_UI_URL}/#/experiments/{summary['mlflow']['experiment_id']}"
            f"/runs/{sweep[1]}"
        )
    print("=" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
