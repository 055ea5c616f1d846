"""Scenario 1: GpuDockerOperator tasks under a real scheduler, killed every way a task dies.

Per repetition, five DAG runs go at once (LocalExecutor, parallelism 6), each hit by one fault
once its trainer runs: marked failed and marked success through the REST API,
``execution_timeout``, SIGTERM to the task process (then a retry), SIGKILL to the task process
(then a retry that must reattach: one trainer run, one result). Then, alone, the scheduler is
restarted mid-run (SIGTERM, as systemd or Kubernetes restart it, and SIGKILL of its process
group, as the OOM killer or a lost node does). Every case counts the containers it left, how
often the trainer ran and, per scenario, the GPU leases still held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos import docker_faults as faults
from tests.chaos.conftest import repetitions
from tests.chaos.ledger import LEDGER
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.chaos.conftest import ChaosServices

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

DAG = "chaos_docker"
TIMEOUT_DAG = "chaos_docker_timeout"

#: name -> (DAG, fault, conf, expected final state, retry must reattach)
CONCURRENT: dict[str, tuple[str, Callable[[faults.Case], None], dict[str, Any], str, bool]] = {
    "marked failed (REST)": (DAG, faults.mark_failed, {"sleep": 300}, "failed", False),
    "marked success (REST)": (DAG, faults.mark_success, {"sleep": 300}, "success", False),
    "execution_timeout": (TIMEOUT_DAG, faults.nothing, {"sleep": 300}, "failed", False),
    "SIGTERM, then retry": (DAG, faults.sigterm_task, {"sleep": 300, "retry_sleep": 2}, "success", False),
    "SIGKILL, then retry (reattach)": (DAG, faults.sigkill_task, {"sleep": 20}, "success", True),
}


@pytest.fixture(scope="module")
def docker_stack(chaos: ChaosServices) -> ChaosServices:
    chaos.stack.serve(DAG, TIMEOUT_DAG)
    return chaos


@pytest.fixture(scope="module")
def cli(docker_stack: ChaosServices) -> Any:
    import docker

    client = docker.APIClient(base_url="unix://var/run/docker.sock")
    yield client
    client.close()


def _record(scenario: str, cases: list[faults.Case], counts: list[dict[str, int]], lease_dir: Any) -> None:
    row = LEDGER.row(scenario)
    row.repetitions += len(cases)
    row.kills += len(cases)
    row.orphans += sum(c["orphans"] for c in counts)
    row.double_runs += sum(c["double_runs"] for c in counts)
    row.leases_left = len(faults.held_leases(lease_dir))
    for case in cases:
        row.details.extend(case.notes)


def _run_case(chaos: ChaosServices, cli: Any, name: str, attempt: int) -> tuple[faults.Case, dict[str, int]]:
    dag_id, fault, conf, expected, reattach = CONCURRENT[name]
    slug = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
    case = faults.Case(
        chaos.stack,
        cli,
        chaos.markers,
        dag_id,
        f"{slug}_{attempt}_{time.time_ns()}",
        expected,
        reattach=reattach,
    )
    chaos.stack.trigger(dag_id, case.run_id, conf)
    faults.wait_running(case)
    time.sleep(1)  # well inside the trainer's sleep
    fault(case)
    return case, faults.settle(case)


def test_concurrent_kills(docker_stack: ChaosServices, cli: Any) -> None:
    chaos = docker_stack
    n = repetitions(1)
    results: dict[str, list[tuple[faults.Case, dict[str, int]]]] = {name: [] for name in CONCURRENT}
    with ThreadPoolExecutor(max_workers=len(CONCURRENT)) as pool:
        for attempt in range(n):
            futures = {name: pool.submit(_run_case, chaos, cli, name, attempt) for name in CONCURRENT}
            for name, future in futures.items():
                results[name].append(future.result())
    lease_dir = chaos.stack.home / "leases"
    for name, done in results.items():
        _record(name, [c for c, _ in done], [k for _, k in done], lease_dir)
    problems = [
        (name, counts, case.notes)
        for name, done in results.items()
        for case, counts in done
        if any(counts.values())
    ]
    assert problems == [], problems
    assert faults.held_leases(lease_dir) == []
    assert faults.reapers_alive() == [], "container reapers outlived their task processes"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_scheduler_restart_mid_run(docker_stack: ChaosServices, cli: Any, sig: signal.Signals) -> None:
    chaos = docker_stack
    scenario = f"scheduler restarted ({sig.name}) mid-run"
    cases, counts = [], []
    for attempt in range(repetitions(1)):
        case = faults.Case(
            chaos.stack,
            cli,
            chaos.markers,
            DAG,
            f"scheduler_{sig.name.lower()}_{attempt}_{time.time_ns()}",
            "success",
            # A SIGKILLed scheduler takes the supervisor with it, not the task process or the
            # container: the next try must reattach. SIGTERM lets the supervisor end the try.
            reattach=sig == signal.SIGKILL,
        )
        chaos.stack.trigger(DAG, case.run_id, {"sleep": 25, "retry_sleep": 2})
        faults.wait_running(case)
        chaos.stack.stop("scheduler", sig)
        time.sleep(3)
        chaos.stack.start("scheduler")
        cases.append(case)
        counts.append(faults.settle(case, timeout=400))
    _record(scenario, cases, counts, chaos.stack.home / "leases")
    problems = [(c.run_id, k, c.notes) for c, k in zip(cases, counts) if any(k.values())]
    assert problems == [], problems


def _restart_engine() -> None:
    """Stop dockerd (SIGTERM: it stops every container), then start it again as CI does."""
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    assert pids, "no dockerd process to restart"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.5)
    subprocess.run(["bash", str(REPO_ROOT / "scripts/ci/start_docker.sh")], check=True, timeout=120)


def test_docker_engine_restart_mid_run(docker_stack: ChaosServices, cli: Any) -> None:
    """
    The engine restarts under a running task (no ``live-restore``: the restart kills the trainer).

    The operator's call: the try fails with the container's exit code (its run is lost), the
    dead container is removed once the engine answers again, and the retry starts afresh.
    """
    chaos = docker_stack
    cases, counts = [], []
    for attempt in range(repetitions(1)):
        case = faults.Case(
            chaos.stack, cli, chaos.markers, DAG, f"engine_restart_{attempt}_{time.time_ns()}", "success"
        )
        chaos.stack.trigger(DAG, case.run_id, {"sleep": 300, "retry_sleep": 2})
        faults.wait_running(case)
        _restart_engine()
        cases.append(case)
        counts.append(faults.settle(case, timeout=400))
    _record("Docker engine restarted mid-run", cases, counts, chaos.stack.home / "leases")
    problems = [(c.run_id, k, c.notes) for c, k in zip(cases, counts) if any(k.values())]
    assert problems == [], problems


SWEEP_DAG = "chaos_sweep"


def _trial_markers(markers: Path, run_id: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    folder = markers / run_id
    for path in folder.glob("*-*-*") if folder.exists() else []:
        trial_id, kind, _ = path.name.rsplit("-", 2)
        counts.setdefault(trial_id, {"start": 0, "end": 0})[kind] += 1
    return counts


def test_container_sweep_trial_sigkill_then_retry(docker_stack: ChaosServices, cli: Any) -> None:
    """
    The task running a batch of three container trials is SIGKILLed while its second trial runs.

    The retry must serve the first trial from the trial cache, reattach to the second trial's
    container and run the third: every trial starts once and completes once.
    """
    chaos = docker_stack
    chaos.stack.serve(SWEEP_DAG)
    cases, counts = [], []
    for attempt in range(repetitions(1)):
        case = faults.Case(
            chaos.stack, cli, chaos.markers, SWEEP_DAG, f"sweep_sigkill_{attempt}_{time.time_ns()}", "success"
        )
        chaos.stack.trigger(SWEEP_DAG, case.run_id)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            trials = _trial_markers(chaos.markers, case.run_id)
            if len(trials) >= 2 and [c for c in case.containers() if c["State"] == "running"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the second trial never ran: {_trial_markers(chaos.markers, case.run_id)}")
        ti = chaos.stack.task_instance(SWEEP_DAG, case.run_id, "train/0")
        os.kill(faults.task_process(ti["id"]), signal.SIGKILL)
        count = faults.settle(case, timeout=400, task_id="train/0")
        trials = _trial_markers(chaos.markers, case.run_id)
        extra = sum(max(0, t["start"] - 1) + max(0, t["end"] - 1) for t in trials.values())
        if extra or len(trials) != 3 or any(t["end"] != 1 for t in trials.values()):
            case.notes.append(f"{case.run_id}: trial starts/ends {trials}")
        count["double_runs"] = extra
        count["incomplete"] = int(len(trials) != 3 or any(t["end"] != 1 for t in trials.values()))
        cases.append(case)
        counts.append(count)
    _record("container sweep: trial SIGKILLed, then retry", cases, counts, chaos.stack.home / "leases")
    problems = [(c.run_id, k, c.notes) for c, k in zip(cases, counts) if any(k.values())]
    assert problems == [], problems
