"""The container reaper: a killed task's container goes even when the task process dies first.

Airflow's supervisor answers "marked failed/success", a timeout of the whole try or a SIGTERM of
the worker by sending the task process SIGTERM, and SIGKILLs it 5 s later. ``on_kill`` stops and
removes the container in that time, but nothing promised it would be enough: a slow engine, a
stop that waits out its grace period, or a SIGTERM that arrives while the container is being
created (so ``on_kill`` has nothing to stop yet, and the container starts a moment later) left
the container running after the SIGKILL, with no try left to find it.

So ``on_kill`` first starts this reaper: a small process in its own session (the SIGKILL of the
task's process group does not reach it) that waits for the task process to exit, then stops and
removes (or keeps, renamed, as ``auto_remove`` says) the container of that name, if one is still
there and was created by this try or an earlier one (its ``airflow-mlops.try_number`` label).
A retry's container (a later try number) is never touched. When ``on_kill`` finished the job
itself, the reaper finds nothing and exits.

It imports only the standard library and docker-py, so it starts in well under a second.
Run as ``python -m airflow_mlops_provider.operators.docker_reaper '<json spec>'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

__all__ = ["TRY_LABEL", "main", "spawn_reaper"]

#: The label recording which try created a container; the reaper only removes its own or older ones.
TRY_LABEL = "airflow-mlops.try_number"
#: How long the reaper waits for the task process before it gives up (the process then cleans up).
MAX_WAIT = 3600.0


def spawn_reaper(
    *,
    name: str,
    try_number: int,
    docker_urls: list[str],
    auto_remove: str,
    kept_name: str,
    stop_grace_period: int,
    api_version: str | None = None,
    tls: dict[str, Any] | None = None,
) -> subprocess.Popen[bytes] | None:
    """
    Start the reaper for this process's container ``name``; return it (None if it could not start).

    :param name: The container's (deterministic) name.
    :param try_number: This try; containers labelled with a later try are left alone.
    :param docker_urls: The engine's URL (DockerOperator's ``docker_url``: one, or several tried in turn).
    :param auto_remove: ``"force"``, ``"success"`` or ``"never"``: a killed container is removed
        only with ``"force"``, else stopped and renamed ``kept_name``.
    :param kept_name: ``<name>-try<N>``.
    :param stop_grace_period: Seconds between SIGTERM and SIGKILL of the container.
    :param api_version: The Docker API version the operator uses.
    :param tls: ``ca_cert``, ``client_cert``, ``client_key`` and ``verify`` of the operator.
    """
    spec = {
        "pid": os.getpid(),
        "name": name,
        "try_number": try_number,
        "docker_urls": docker_urls,
        "auto_remove": auto_remove,
        "kept_name": kept_name,
        "stop_grace_period": stop_grace_period,
        "api_version": api_version,
        "tls": tls,
    }
    try:
        return subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        return None


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` exits; True if it did within ``timeout``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfd (old kernel): poll the pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def _client(spec: dict[str, Any]) -> Any:
    """A client of the first engine URL that answers (DockerHook tries its URLs in turn too)."""
    import docker

    tls: Any = False
    options = spec.get("tls") or {}
    if options.get("ca_cert") and options.get("client_cert") and options.get("client_key"):
        tls = docker.tls.TLSConfig(
            ca_cert=options["ca_cert"],
            client_cert=(options["client_cert"], options["client_key"]),
            verify=options.get("verify", True),
        )
    error: Exception | None = None
    for url in spec["docker_urls"]:
        try:
            cli = docker.APIClient(base_url=url, version=spec.get("api_version") or "auto", tls=tls)
            cli.ping()
            return cli
        except Exception as err:  # the next URL, as DockerHook does
            error = err
    raise RuntimeError(f"no Docker engine answers at {spec['docker_urls']}: {error}")


def reap(spec: dict[str, Any], cli: Any) -> str:
    """Stop and remove (or keep) the container ``spec`` names; return what was done."""
    from docker.errors import APIError, NotFound

    try:
        found = cli.inspect_container(spec["name"])
    except NotFound:
        return "gone"
    labels = (found.get("Config") or {}).get("Labels") or {}
    try:
        created_by = int(labels.get(TRY_LABEL, "0"))
    except ValueError:
        created_by = 0
    if created_by > int(spec["try_number"]):
        return "a later try's container"
    container_id = found["Id"]
    if spec["auto_remove"] == "force":
        with contextlib.suppress(NotFound):
            try:
                cli.remove_container(container_id, force=True, v=True)
            except APIError as err:
                if "already in progress" not in str(err):
                    raise
        return "removed"
    with contextlib.suppress(NotFound):
        cli.stop(container_id, timeout=int(spec["stop_grace_period"]))
        if found.get("Name", "").lstrip("/") == spec["name"]:
            cli.rename(container_id, spec["kept_name"])
    return "kept"


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    if not _wait_for_exit(int(spec["pid"]), MAX_WAIT):
        return 0
    # The engine may be restarting: try for a minute.
    deadline = time.monotonic() + 60
    while True:
        try:
            reap(spec, _client(spec))
            return 0
        except Exception:
            if time.monotonic() > deadline:
                return 1
            time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
