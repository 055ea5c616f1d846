"""One-command demo: run ``mlops_training_pipeline`` end to end on embedded defaults.

``make demo`` runs this with the project's virtualenv. Everything lands in ``.demo/``:

- Airflow on SQLite (``.demo/airflow``), run through ``airflow dags test``;
- MLflow with a local SQLite store and local artifacts (``.demo/mlflow.db``, ``.demo/mlartifacts``);
- Feast's local provider: parquet offline store, SQLite online store, file registry;
- training in containers when a Docker engine answers (the trainer image is built locally,
  offline), otherwise as local processes (the documented ``local`` runtime), and it says which.

At the end it prints the trials run, the best trial, the registered version, whether it was
promoted, and the commands to open the Airflow and MLflow UIs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
VENV_BIN = Path(sys.executable).parent


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
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "MLOPS_EXAMPLE_HOME": str(example_home),
            "MLOPS_EXAMPLE_RUNTIME": runtime,
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "mlflow", "extra": {"tracking_uri": f"sqlite:///{DEMO / 'mlflow.db'}"}}
            ),
            "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(
                {"conn_type": "feast", "extra": {"repo_path": str(example_home / "feature_repo")}}
            ),
        }
    )
    airflow = str(VENV_BIN / "airflow")
    say("migrating the Airflow metadata database (SQLite)")
    subprocess.run([airflow, "db", "migrate"], env=env, cwd=DEMO, check=True, capture_output=True)
    logical_date = last_monday()
    say(f"running mlops_training_pipeline for the week ending {logical_date:%Y-%m-%d} (airflow dags test)")
    log_path = DEMO / "pipeline.log"
    with log_path.open("w") as log:
        proc = subprocess.run(
            [airflow, "dags", "test", "mlops_training_pipeline", logical_date.isoformat()],
            env=env,
            cwd=DEMO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    summary_path = example_home / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        say(f"the pipeline failed; its log is {log_path}")
        print(log_path.read_text()[-4000:])
        return 1
    summary = json.loads(summary_path.read_text())
    if summary["promoted"]:
        say("the champion moved: running mlops_deploy_on_new_champion (what its Asset schedule triggers)")
        with (DEMO / "deploy.log").open("w") as log:
            deployed = subprocess.run(
                [
                    airflow,
                    "dags",
                    "test",
                    "mlops_deploy_on_new_champion",
                    datetime.now(timezone.utc).isoformat(),
                ],
                env=env,
                cwd=DEMO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if deployed.returncode != 0:
            say(f"the deployment DAG failed; its log is {DEMO / 'deploy.log'}")
            return 1
    print()
    print("=" * 72)
    print(f"mlops_training_pipeline: success in {time.time() - started:.0f}s (runtime: {runtime})")
    print(f"trials run:          {summary['trials']} ({summary['successful_trials']} succeeded)")
    print(
        f"best trial:          {summary['best_trial']} family {summary['best_family']} "
        f"params {summary['best_params']} test AUC {summary['test_auc']:.4f}"
    )
    print("leaderboard (validation AUC):")
    for row in summary["leaderboard"][:8]:
        auc = (row.get("metrics") or {}).get("val_auc")
        print(f"  #{row.get('rank')}: {row['trial_id']} {row['params']} val_auc={auc}")
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
        "--port 5000   # http://localhost:5000"
    )
    print("=" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
