"""Start a real Airflow (api-server, scheduler with LocalExecutor, dag-processor) on loopback.

The SimpleAuthManager runs with ``simple_auth_manager_all_admins`` so REST calls need no token,
as in ``airflow standalone``. Every process runs in its own process group and is killed with it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tests.conftest import VENV_BIN, airflow_env, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


class RestApi:
    """A tiny JSON client for Airflow's REST API v2."""

    def __init__(self, base: str, *, token: str | None = None) -> None:
        self.base = base
        self.token = token
        #: The api-server's root URL (``http://127.0.0.1:<port>``), for plugin pages and login.
        self.root = base.rsplit("/api/v2", 1)[0]

    def as_user(self, username: str, password: str) -> RestApi:
        """Return a client that sends ``username``'s JWT (from ``POST /auth/token``)."""
        return RestApi(self.base, token=login_token(self.root, username, password))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """
        Send one request; return (status, JSON body).

        Airflow on SQLite answers 500 "Database error" when its writer lock is held past the
        timeout by another process (scheduler, task supervisors). That is SQLite's single-writer
        limit, not the behaviour under test, so such an answer is retried a few times.
        """
        for _ in range(5):
            status, answer = self._call_once(method, path, body)
            detail = answer.get("detail") if isinstance(answer, dict) else None
            if status == 500 and isinstance(detail, dict) and detail.get("reason") == "Database error":
                time.sleep(2)
                continue
            return status, answer
        return status, answer

    def _call_once(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_for(self, what: str, probe: Callable[[], tuple[bool, Any]], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                ok, last = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                ok, last = False, err
            if ok:
                return last
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def login_token(root: str, username: str, password: str) -> str:
    """Sign ``username`` in through the SimpleAuthManager's ``POST /auth/token``; return the JWT."""
    request = urllib.request.Request(
        f"{root}/auth/token",
        data=json.dumps({"username": username, "password": password}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


def generated_passwords(airflow_home: Path) -> dict[str, str]:
    """The SimpleAuthManager's generated passwords (``simple_auth_manager_passwords.json.generated``)."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def serve_dags(api: RestApi, *dag_ids: str, timeout: float = 240) -> None:
    """
    Wait until the dag-processor has serialized each DAG, then unpause it.

    ``airflow dags test`` runs earlier in the session may have created the DAG paused.
    """
    for dag_id in dag_ids:

        def served(dag_id: str = dag_id) -> tuple[bool, Any]:
            status, body = api.call("GET", f"/dags/{dag_id}")
            return status == 200, body

        api.wait_for(f"DAG {dag_id} to be served", served, timeout=timeout)
        status, body = api.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        if status != 200 or body.get("is_paused") is not False:
            raise AssertionError(f"could not unpause {dag_id}: {status} {body}")


@contextmanager
def airflow_services(
    dags_folder: Path,
    logs: Path,
    *,
    users: str | None = None,
    components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor"),
    **extra_env: str,
) -> Iterator[RestApi]:
    """
    Run api-server + scheduler + dag-processor on the test DB; yield a REST client.

    :param dags_folder: The DAGs folder.
    :param logs: Where each component's output goes (``<name>.log``).
    :param users: SimpleAuthManager users (``"alice:viewer,bob:admin"``) instead of "all admins";
        their generated passwords are in ``generated_passwords(AIRFLOW_HOME)`` and the client
        yielded signs in as the first of them. Set ``AIRFLOW__CORE__AUTH_MANAGER`` in
        ``extra_env`` for another auth manager.
    :param components: The components to start (the api-server always).
    :param extra_env: More ``AIRFLOW__*`` settings.
    """
    port = free_port()
    settings = dict(
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
    )
    if users is not None:
        settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
        settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = users
    settings.update(extra_env)
    env = airflow_env(**settings)
    commands = {
        name: args
        for name, args in {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }.items()
        if name == "api-server" or name in components
    }
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, args in commands.items():
            with open(logs / f"{name}.log", "wb") as out:
                procs.append(
                    (
                        name,
                        subprocess.Popen(
                            [str(VENV_BIN / "airflow"), *args],
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        ),
                    )
                )
        api = RestApi(f"http://127.0.0.1:{port}/api/v2")

        def up() -> tuple[bool, Any]:
            for name, proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}")
            return api.call("GET", "/monitor/health")[0] == 200, None

        api.wait_for("the api-server", up, timeout=240)
        if users is not None:
            from pathlib import Path as _Path

            first = users.split(",")[0].split(":")[0]
            password = generated_passwords(_Path(env["AIRFLOW_HOME"]))[first]
            api = api.as_user(first, password)
        yield api
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
