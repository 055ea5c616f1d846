"""What the Docker scenarios do to a running GpuDockerOperator task, and how they count the outcome.

Each fault is a function ``fault(case)`` applied once the task instance's container runs; then
:func:`settle` waits for the task instance to end and for its container to go, and counts:

- **orphans**: containers of the run still present 60 s after the task instance ended;
- **double runs**: trainer completions beyond one, or (after a SIGKILL, where the retry must
  reattach) trainer starts beyond one;
- **leases left** are counted once for the whole scenario, after every run ended.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.chaos.stack import ChaosStack

TASK = "train"
#: A container still present this long after its task instance ended is an orphan (the issue's 60 s).
ORPHAN_AFTER = 60.0


@dataclass
class Case:
    stack: ChaosStack
    cli: Any
    markers: Path
    dag_id: str
    run_id: str
    expected_state: str
    #: The retry must reattach to the first container (one trainer start).
    reattach: bool = False
    container: dict[str, Any] | None = None
    ti: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def containers(self) -> list[dict[str, Any]]:
        return self.cli.containers(
            all=True,
            filters={"label": [f"airflow-mlops.dag_id={self.dag_id}", f"airflow-mlops.run_id={self.run_id}"]},
        )

    def starts(self) -> int:
        folder = self.markers / self.run_id
        return len(list(folder.glob("start-*"))) if folder.exists() else 0

    def ends(self) -> int:
        folder = self.markers / self.run_id
        return len(list(folder.glob("end-*"))) if folder.exists() else 0


def wait_running(case: Case, timeout: float = 240) -> None:
    """Wait until the trainer started in a running container and the task instance is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in case.containers() if c["State"] == "running"]
        if running and case.starts() >= 1:
            ti = case.stack.task_instance(case.dag_id, case.run_id, TASK)
            if ti.get("state") == "running":
                case.container, case.ti = running[0], ti
                return
        time.sleep(0.5)
    raise AssertionError(f"{case.run_id}: no running trainer within {timeout}s: {case.containers()}")


def task_process(ti_id: str, timeout: float = 30) -> int:
    """The pid of the task process Airflow's supervisor runs for ``ti_id`` (``airflow worker -- <id>``)."""
    title = f"airflow worker -- {ti_id}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(title):
                return int(entry.name)
        time.sleep(0.5)
    raise AssertionError(f"no task process titled {title!r}")


def mark_failed(case: Case) -> None:
    case.stack.mark(case.dag_id, case.run_id, TASK, "failed")


def mark_success(case: Case) -> None:
    case.stack.mark(case.dag_id, case.run_id, TASK, "success")


def sigterm_task(case: Case) -> None:
    os.kill(task_process(case.ti["id"]), signal.SIGTERM)


def sigkill_task(case: Case) -> None:
    os.kill(task_process(case.ti["id"]), signal.SIGKILL)


def nothing(case: Case) -> None:
    """``execution_timeout`` runs out by itself."""


def settle(case: Case, timeout: float = 300, task_id: str = TASK) -> dict[str, int]:
    """Wait for the run to end and its containers to go; return this case's counts."""
    stack = case.stack
    run = stack.wait_run(case.dag_id, case.run_id, timeout=timeout)
    ti = stack.task_instance(case.dag_id, case.run_id, task_id)
    ended = time.monotonic()
    while case.containers() and time.monotonic() - ended < ORPHAN_AFTER:
        time.sleep(1)
    left = case.containers()
    for item in left:
        case.notes.append(f"{case.run_id}: container {item['Names']} {item['State']} left")
        case.cli.remove_container(item["Id"], force=True)
    starts, ends = case.starts(), case.ends()
    double = max(0, ends - 1) + (max(0, starts - 1) if case.reattach else 0)
    if double:
        case.notes.append(f"{case.run_id}: trainer started {starts}x, completed {ends}x")
    if ti.get("state") != case.expected_state:
        case.notes.append(
            f"{case.run_id}: task ended {ti.get('state')} (try {ti.get('try_number')}), "
            f"expected {case.expected_state}; run {run.get('state')}"
        )
    return {
        "orphans": len(left),
        "double_runs": double,
        "wrong_state": int(ti.get("state") != case.expected_state),
    }


def held_leases(lease_dir: Path) -> list[str]:
    """GPU lease files whose flock some process still holds."""
    from airflow_mlops_provider.docker_gpu.leases import lock_is_held

    if not lease_dir.exists():
        return []
    return [str(p) for p in lease_dir.rglob("gpu-*.lock") if lock_is_held(p)]


def reapers_alive(timeout: float = 90) -> list[int]:
    """Container reapers still running after ``timeout`` s (each must exit once its task process has)."""
    # argv: python -m airflow_mlops_provider.operators.docker_reaper '<spec>'
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                if b"airflow_mlops_provider.operators.docker_reaper" not in cmdline:
                    continue
                spec = json.loads(cmdline.split(b"\0")[3])
                # In-process tests of this pytest process (tests/integration/docker) leave reapers
                # that wait for this process; only the stack's task processes count here.
                if spec.get("pid") != os.getpid():
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)
