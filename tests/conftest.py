"""Shared test set-up: an isolated AIRFLOW_HOME, markers, and helpers to run the real Airflow CLI.

AIRFLOW_HOME is set before anything imports airflow, so every test (and every ``airflow``
subprocess a test starts) uses a throw-away SQLite metadata database, never the user's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mlops-test-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
(_AIRFLOW_HOME / "dags").mkdir(parents=True, exist_ok=True)

import pytest  # noqa: E402

from tests.support.ports import free_port  # noqa: E402,F401 (re-exported for tests)


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in [
        ("integration", "needs a real service (Docker engine, mlflow server, Feast store, Airflow)"),
        ("docker", "needs a real Docker engine"),
        ("kubernetes_live", "needs the Kubernetes cluster named by KUBECONFIG"),
        ("slow", "takes more than ~30 s"),
        ("chaos", "faults, kills and secrets under a real scheduler on PostgreSQL, counted (tests/chaos)"),
        ("smoke", "public-API smoke set on real components, run in every env of `make test-matrix`"),
    ]:
        config.addinivalue_line("markers", f"{marker}: {text}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def airflow_env(**extra: str) -> dict[str, str]:
    """Return the environment for an ``airflow`` subprocess: the test AIRFLOW_HOME plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env


def run_airflow(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real ``airflow`` CLI of this virtualenv and return the completed process."""
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), *args],
        env=env or airflow_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"airflow {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata database once; return AIRFLOW_HOME."""
    run_airflow("db", "migrate", timeout=900)
    return _AIRFLOW_HOME


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    """A fresh, empty DAGs folder for one test."""
    folder = tmp_path / "dags"
    folder.mkdir()
    return folder


def dags_test(
    dag_id: str,
    dags_folder: Path | str,
    *,
    conf: str | None = None,
    logical_date: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 900,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """
    Run ``airflow dags test DAG_ID`` on ``dags_folder`` in a subprocess (a real DAG run).

    The caller must request the ``airflow_db`` fixture first.
    """
    env = airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder), **(extra_env or {}))
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    if conf:
        args += ["--conf", conf]
    return run_airflow(*args, env=env, timeout=timeout, check=check)


def docker_required() -> bool:
    """True when Docker-backed tests must run (CI sets MLOPS_REQUIRE_DOCKER=1)."""
    return os.environ.get("MLOPS_REQUIRE_DOCKER", "").lower() in {"1", "true", "yes"}


def docker_available() -> bool:
    try:
        out = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip when no Docker engine answers, unless MLOPS_REQUIRE_DOCKER=1 makes that a failure."""
    if docker_available():
        return
    if docker_required():
        pytest.fail("MLOPS_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`")
    pytest.skip("no Docker engine answers `docker info` (set MLOPS_REQUIRE_DOCKER=1 to fail instead)")


#: The local base image CI builds with scripts/ci/build_base_image.sh (Debian bookworm + python3).
BASE_IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The local test image; built on demand when missing (no registry is needed)."""
    probe = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            ["bash", str(REPO_ROOT / "scripts/ci/build_base_image.sh"), BASE_IMAGE],
            check=True,
            timeout=900,
        )
    return BASE_IMAGE


_FIGURES: list[str] = []


@pytest.fixture
def report_figure():
    """Record a measured figure; all figures are printed in pytest's terminal summary."""

    def _report(line: str) -> None:
        _FIGURES.append(line)

    return _report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
