"""The GPUs page's data: real lease files held by real processes, waiting markers, k8s inventory.

No Docker engine and no cluster: leases and waiting markers are real ``flock``'d files held by
real subprocesses; the Kubernetes inventory comes from real ``V1Node`` objects served by a
stand-in ``list_node`` (no cluster runs in unit tests; tests/integration/kubernetes has one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_mlops_provider.docker_gpu.leases import host_key, lease_dir_for_host, read_host_leases
from airflow_mlops_provider.plugins import gpus_data
from airflow_mlops_provider.plugins.gpus_data import (
    call_with_timeout,
    docker_host_report,
    docker_hosts,
    kubernetes_report,
    task_href,
)

if TYPE_CHECKING:
    from pathlib import Path

HOST = "tcp://gpu-a:2376"
TASK = {"dag_id": "train", "task_id": "fit", "run_id": "manual__2026-01-01", "map_index": "-1"}
WAITER = {"dag_id": "train", "task_id": "sweep", "run_id": "manual__2026-01-01", "map_index": "3"}


def _process(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _acquire_code(base: Path, device_ids: list[str], owner: str, task: dict[str, str]) -> str:
    return (
        "import time; from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease; "
        f"acquire_gpu_lease({HOST!r}, ['0', '1', '2'], device_ids={device_ids!r}, lease_dir={str(base)!r}, "
        f"owner={owner!r}, task={task!r}, poll_interval=0.05); print('held', flush=True); time.sleep(120)"
    )


def _wait_until(what: str, probe, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "leases"


def test_holders_waiters_and_stale_files(base: Path):
    directory = lease_dir_for_host(HOST, base)
    # A stale lease file (its holder is gone: nobody holds the lock) and a stale waiting marker.
    (directory / "gpu-2.lock").write_text(json.dumps({"owner": "dead", "pid": 1, "since": 1.0}))
    (directory / "waiting-0123456789abcdef.json").write_text(json.dumps({"owner": "dead", "count": 1}))
    holder = _process(_acquire_code(base, ["1"], "train.fit/mlops-train-fit-abc", TASK))
    waiter = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        waiter = _process(_acquire_code(base, ["1"], "train.sweep/mlops-train-sweep-3-def", WAITER))
        leases = _wait_until(
            "the waiting marker",
            lambda: read_host_leases(directory)["waiting"] and read_host_leases(directory),
        )
        assert leases["devices"]["2"] is None  # stale lease: free
        assert leases["devices"]["1"]["owner"] == "train.fit/mlops-train-fit-abc"
        assert leases["devices"]["1"]["pid"] == holder.pid
        (waiting,) = leases["waiting"]  # the stale marker is ignored
        assert waiting["owner"] == "train.sweep/mlops-train-sweep-3-def"
        assert waiting["count"] == 1
        assert waiting["devices"] == ["1"]
        assert waiting["task"] == WAITER
        assert waiting["pid"] == waiter.pid
        assert waiting["host"] == HOST

        report = docker_host_report(HOST, directory, query_engine=False)
        assert report["error"] is None
        assert report["containers"] == []
        devices = {d["id"]: d for d in report["devices"]}
        assert sorted(devices) == ["1", "2"]
        assert devices["2"]["state"] == "free"
        assert devices["2"]["lease"] is None
        assert devices["1"]["state"] == "leased"
        assert devices["1"]["lease"]["devices"] == ["1"]
        assert devices["1"]["lease"]["task"]["href"] == "/dags/train/runs/manual__2026-01-01/tasks/fit"
        (shown,) = report["waiting"]
        assert shown["task"]["href"] == "/dags/train/runs/manual__2026-01-01/tasks/sweep/mapped/3"
        assert shown["count"] == 1

        # A user who may not read the DAG sees that devices are taken, not by which task.
        hidden = docker_host_report(
            HOST, directory, may_read=lambda dag_id: dag_id == "other", query_engine=False
        )
        (leased,) = [d for d in hidden["devices"] if d["id"] == "1"]
        assert leased["lease"]["task"] == {"hidden": True}
        assert leased["lease"]["owner"] == ""
        assert hidden["waiting"][0]["task"] == {"hidden": True}
        assert hidden["waiting"][0]["owner"] == ""

        # The holder dies: the waiter takes the device and its marker goes away.
        holder.kill()
        holder.wait()
        assert waiter.stdout is not None
        assert waiter.stdout.readline().strip() == "held"
        after = read_host_leases(directory)
        assert after["waiting"] == []
        assert after["devices"]["1"]["task"] == WAITER
        assert not [
            p.name for p in directory.glob("waiting-*.json") if p.name != "waiting-0123456789abcdef.json"
        ]
    finally:
        for proc in (holder, waiter):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert read_host_leases(directory)["devices"]["1"] is None


def test_a_lease_without_task_record_is_linked_through_its_container(base: Path, monkeypatch):
    directory = lease_dir_for_host(HOST, base)
    from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease

    lease = acquire_gpu_lease(
        HOST, ["0", "1"], count=1, lease_dir=base, owner="train.fit/mlops-c1", timeout=0
    )
    container = {
        "name": "mlops-c1",
        "id": "abc",
        "status": "Up 1 second",
        "image": "img",
        "gpu_ids": ["0"],
        "identity": dict(TASK),
    }
    monkeypatch.setattr(gpus_data, "labelled_containers", lambda host, timeout=5: [dict(container)])
    monkeypatch.setenv(
        "AIRFLOW__MLOPS__DOCKER_HOST_GPUS", json.dumps({HOST: {"0": "NVIDIA L4", "1": "NVIDIA L4"}})
    )
    try:
        report = docker_host_report(HOST, directory)
    finally:
        lease.release()
    assert report["inventory_source"] == f"[mlops] docker_host_gpus[{HOST!r}]"
    first, second = report["devices"]
    assert (first["id"], first["name"], first["state"]) == ("0", "NVIDIA L4", "leased")
    assert first["lease"]["task"]["href"] == "/dags/train/runs/manual__2026-01-01/tasks/fit"
    assert first["containers"][0]["name"] == "mlops-c1"
    assert (second["id"], second["state"], second["containers"]) == ("1", "free", [])


def test_engine_errors_become_the_hosts_error(base: Path, monkeypatch):
    def refuse(host: str, timeout: float = 5) -> list:
        raise ConnectionError("Connection refused: token=s3cr3t-value")

    from airflow._shared.secrets_masker import mask_secret

    mask_secret("s3cr3t-value")
    monkeypatch.setattr(gpus_data, "labelled_containers", refuse)
    report = docker_host_report(HOST, base / "missing")
    assert report["error"].startswith("ConnectionError: Connection refused")
    assert "s3cr3t-value" not in report["error"]
    assert report["devices"] == []
    assert report["waiting"] == []


def test_hosts_come_from_config_lease_folders_and_the_default(base: Path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", json.dumps({"tcp://gpu-b:2376": 2}))
    from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease

    acquire_gpu_lease(HOST, ["0"], count=1, lease_dir=base, timeout=0).release()  # records host
    (base / "old_folder").mkdir()
    hosts, error = docker_hosts(base)
    assert error is None
    assert [(h, d.name, url) for h, d, url in hosts] == [
        ("tcp://gpu-b:2376", host_key("tcp://gpu-b:2376"), True),
        ("unix://var/run/docker.sock", "unix_var_run_docker.sock", True),
        ("old_folder", "old_folder", False),
        (HOST, host_key(HOST), True),
    ]
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", "{not json")
    assert docker_hosts(base)[1].startswith("[mlops] docker_host_gpus is not valid JSON")


def _node(name: str, product: str | None, gpus: str, *, ready: bool = True, cordoned: bool = False):
    from kubernetes.client import V1Node, V1NodeCondition, V1NodeSpec, V1NodeStatus, V1ObjectMeta

    labels = {"nvidia.com/gpu.product": product} if product else {}
    return V1Node(
        metadata=V1ObjectMeta(name=name, labels=labels),
        spec=V1NodeSpec(unschedulable=cordoned),
        status=V1NodeStatus(
            allocatable={"nvidia.com/gpu": gpus, "cpu": "8"},
            capacity={"nvidia.com/gpu": gpus},
            conditions=[V1NodeCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


class _Nodes:
    """``CoreV1Api.list_node`` answering real ``V1NodeList`` pages."""

    def __init__(self, nodes: list) -> None:
        self.nodes = nodes

    def list_node(self, **kwargs):
        from kubernetes.client import V1ListMeta, V1NodeList

        return V1NodeList(items=self.nodes, metadata=V1ListMeta())


def test_kubernetes_inventory_per_node_and_product():
    from airflow_mlops_provider.hooks.kubernetes import GpuKubernetesHook

    nodes = [
        _node("a100-1", "NVIDIA-A100-SXM4-80GB", "8"),
        _node("a100-2", "NVIDIA-A100-SXM4-80GB", "8"),
        _node("l4-1", "NVIDIA-L4", "4", cordoned=True),
        _node("bare", None, "1", ready=False),
    ]

    def hook(conn_id: str | None) -> GpuKubernetesHook:
        built = GpuKubernetesHook(conn_id=conn_id)
        built.__dict__["core_v1_client"] = _Nodes(nodes)
        return built

    report = kubernetes_report(["k8s_gpu"], hook_factory=hook)
    assert report["configured"] is True
    (cluster,) = report["clusters"]
    assert cluster["conn_id"] == "k8s_gpu"
    assert cluster["error"] is None
    inventory = cluster["inventory"]
    assert inventory["total"] == 16
    assert inventory["by_product"] == {"NVIDIA-A100-SXM4-80GB": {"nodes": 2, "allocatable": 16}}
    assert [(n["name"], n["product"], n["schedulable"], n["ready"]) for n in inventory["nodes"]] == [
        ("a100-1", "NVIDIA-A100-SXM4-80GB", True, True),
        ("a100-2", "NVIDIA-A100-SXM4-80GB", True, True),
        ("bare", "unknown", True, False),
        ("l4-1", "NVIDIA-L4", False, True),
    ]


def test_kubernetes_not_configured_or_failing_is_a_notice(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__PLUGIN_BACKEND_TIMEOUT", "0.2")

    class Hanging:
        def gpu_inventory(self) -> dict:
            time.sleep(5)
            return {}

    class Broken:
        def gpu_inventory(self) -> dict:
            raise RuntimeError("Invalid kube-config file. No configuration found.")

    assert kubernetes_report([]) == {"configured": False, "clusters": []}
    report = kubernetes_report(["slow", None], hook_factory=lambda c: Hanging() if c else Broken())
    slow, default = report["clusters"]
    assert slow["error"] == "TimeoutError: Kubernetes API (slow) did not answer within 0.2 s"
    assert default["error"] == "RuntimeError: Invalid kube-config file. No configuration found."
    assert slow["inventory"] is None


def test_call_with_timeout_passes_values_and_errors():
    assert call_with_timeout(lambda: 42, "x", timeout=1) == 42
    with pytest.raises(KeyError, match="boom"):
        call_with_timeout(lambda: {}["boom"], "x", timeout=1)


@pytest.mark.parametrize(
    ("task", "href"),
    [
        (TASK, "/dags/train/runs/manual__2026-01-01/tasks/fit"),
        ({**TASK, "map_index": "7"}, "/dags/train/runs/manual__2026-01-01/tasks/fit/mapped/7"),
        (
            {**TASK, "run_id": "scheduled__2026-01-01T00:00:00+00:00"},
            "/dags/train/runs/scheduled__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/fit",
        ),
        ({**TASK, "dag_id": "a/b?c"}, "/dags/a%2Fb%3Fc/runs/manual__2026-01-01/tasks/fit"),
    ],
    ids=["plain", "mapped", "quoted-run", "quoted-dag"],
)
def test_task_href(task, href):
    assert task_href(task) == href


def test_page_escapes_owner_text_and_shows_values(base: Path):
    from airflow_mlops_provider.plugins.render import page

    report = {
        "lease_dir": str(base),
        "config_error": None,
        "docker": [
            {
                "host": HOST,
                "lease_dir": str(base),
                "inventory_source": None,
                "devices": [
                    {
                        "id": "0",
                        "name": "NVIDIA L4",
                        "state": "leased",
                        "lease": {"owner": "<script>alert(1)</script>", "since": time.time(), "task": None},
                        "containers": [],
                    }
                ],
                "waiting": [
                    {
                        "owner": "w",
                        "count": 2,
                        "devices": ["0", "1"],
                        "since": time.time(),
                        "task": {**WAITER, "href": task_href(WAITER)},
                    }
                ],
                "containers": [],
                "error": "ConnectionError: refused",
                "config_error": None,
            }
        ],
        "kubernetes": {"configured": False, "clusters": []},
    }
    html = page("gpus.html", title="GPUs", active="/mlops/gpus", report=report).body.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="/dags/train/runs/manual__2026-01-01/tasks/sweep/mapped/3" target="_top"' in html
    assert "Docker engine tcp://gpu-a:2376 did not answer: ConnectionError: refused" in html
    assert "No Kubernetes cluster is configured" in html
    assert "NVIDIA L4" in html
    assert "leased" in html
