"""The chaos suite's Airflow: api-server, scheduler, dag-processor and triggerer on PostgreSQL.

Every component is a real ``airflow`` process in its own session (process group), on loopback,
so a scenario can kill or restart one of them the way an operator or the kernel would. The
scheduler runs the LocalExecutor with parallelism 6 (the issue asks for at least 4), so task
processes are the supervisor-and-task-runner pairs users run, not ``airflow tasks test``.

What a scenario needs from the stack:

- :attr:`ChaosStack.api`, a REST client (``airflow_services.RestApi``);
- :meth:`ChaosStack.trigger` and :meth:`ChaosStack.wait_state` for DAG runs and task instances;
- :meth:`ChaosStack.stop` / :meth:`ChaosStack.start` / :meth:`ChaosStack.restart` for components;
- :attr:`ChaosStack.home` (task logs under ``logs/``) and :attr:`ChaosStack.secrets` (every secret
  the stack hands to tasks, searched for afterwards by the secrets scenario).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from typing import TYPE_CHECKING, Any

from tests.conftest import VENV_BIN
from tests.support.airflow_services import RestApi
from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class ChaosStack:
    """
    The Airflow processes of the chaos suite.

    :param home: AIRFLOW_HOME (created; logs, lease directory and markers live under it).
    :param dags_folder: The DAGs folder.
    :param database_url: ``[database] sql_alchemy_conn`` (PostgreSQL).
    :param extra_env: More environment for every component and so every task.
    """

    def __init__(
        self, home: Path, dags_folder: Path, database_url: str, extra_env: Mapping[str, str]
    ) -> None:
        from cryptography.fernet import Fernet

        self.home = home
        self.port = free_port()
        self.logs = home / "components"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(home),
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url,
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="6",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="16",
            AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG="16",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.port}/execution/",
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{self.port}",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            # Their own log-serving ports: another stack (or Airflow) may hold 8793/8794.
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            # A task whose supervisor died (scheduler killed) is failed within ~30 s, not 5 min.
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="30",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="5",
            # A restarted scheduler adopts the dead one's running tasks within 15 s, not 5 min
            # (only then does their missing heartbeat count).
            AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="15",
            AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="10",
            # A killed triggerer's triggers move to the next one after 10 s, not 30 s.
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="2",
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="15",
            AIRFLOW__MLOPS__GPU_LEASE_DIR=str(home / "leases"),
        )
        env.update(extra_env)
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api = RestApi(f"http://127.0.0.1:{self.port}/api/v2")

    # -- processes ----------------------------------------------------------------------------

    def migrate(self) -> None:
        proc = subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise AssertionError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def start(self, name: str) -> None:
        """Start one component (its output is appended to ``components/<name>.log``)."""
        args = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }[name]
        with open(self.logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, *, timeout: float = 60) -> None:
        """
        Signal one component's whole process group, then wait for its main process to exit.

        SIGKILL to the group is what an OOM kill or a lost node does to the component and the
        children in its group. The task processes of the LocalExecutor are in their own groups
        (Airflow's supervisor starts them so), so they outlive a killed scheduler.
        """
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        self.stop(name, sig)
        self.start(name)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited: {(self.logs / f'{name}.log').read_text()[-3000:]}")

    def start_all(self) -> None:
        for name in COMPONENTS:
            self.start(name)

        def up() -> tuple[bool, Any]:
            self.check_alive()
            return self.api.call("GET", "/monitor/health")[0] == 200, None

        self.api.wait_for("the api-server", up, timeout=240)

    def stop_all(self) -> None:
        for name in reversed(COMPONENTS):
            self.stop(name)

    # -- DAG runs -----------------------------------------------------------------------------

    def serve(self, *dag_ids: str, timeout: float = 300) -> None:
        """Wait until the dag-processor has serialized each DAG, then unpause it."""
        for dag_id in dag_ids:

            def served(dag_id: str = dag_id) -> tuple[bool, Any]:
                self.check_alive()
                status, body = self.api.call("GET", f"/dags/{dag_id}")
                return status == 200, body

            self.api.wait_for(f"DAG {dag_id} to be served", served, timeout=timeout)
            status, body = self.api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
            assert status == 200, (status, body)
            assert body.get("is_paused") is False, body

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> str:
        status, body = self.api.call(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})},
        )
        assert status == 200, (status, body)
        return run_id

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        status, body = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        assert status == 200, (status, body)
        return dict(body)

    def wait_ti(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: frozenset[str] | set[str] = TERMINAL_TI_STATES,
        timeout: float = 240,
    ) -> dict[str, Any]:
        """Wait until the task instance is in one of ``states``; return it."""

        def probe() -> tuple[bool, Any]:
            self.check_alive()
            ti = self.task_instance(dag_id, run_id, task_id)
            return ti.get("state") in states, ti

        return dict(self.api.wait_for(f"{dag_id}/{run_id}/{task_id} in {sorted(states)}", probe, timeout))

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        def probe() -> tuple[bool, Any]:
            self.check_alive()
            status, body = self.api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return status == 200 and body.get("state") in TERMINAL_RUN_STATES, body

        return dict(self.api.wait_for(f"run {dag_id}/{run_id} to end", probe, timeout))

    def mark(self, dag_id: str, run_id: str, task_id: str, new_state: str) -> None:
        status, body = self.api.call(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": new_state}
        )
        assert status == 200, (status, body)

    def task_log_files(self) -> list[Path]:
        """Every task log file written so far (``logs/dag_id=*/run_id=*/...``)."""
        return sorted(p for p in (self.home / "logs").rglob("*") if p.is_file())
