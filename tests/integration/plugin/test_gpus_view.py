"""The GPUs page against the real Docker engine, real lease files and a real api-server.

A real container carries the provider's GPU labels (device 0, a task identity); a real process
holds the lease of device 1 and another waits for it; ``[mlops] docker_host_gpus`` names both
devices of the local engine and a second engine that does not answer; KUBECONFIG names no file.
The api-server (the package's shared one: ``plugin_stack`` in conftest.py, which sets the lease
dir and ``docker_host_gpus``) serves ``/mlops/api/gpus`` and ``/mlops/gpus`` to a signed-in viewer.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.plugin.conftest import LOCAL_DOCKER as LOCAL

pytestmark = [pytest.mark.integration, pytest.mark.docker]

HOLDER = {"dag_id": "gpu_train", "task_id": "fit", "run_id": "manual__1", "map_index": "-1"}
WAITER = {"dag_id": "gpu_train", "task_id": "sweep", "run_id": "manual__1", "map_index": "2"}
LABELLED = {"dag_id": "gpu_train", "task_id": "evaluate", "run_id": "manual__1", "map_index": "-1"}


def _get(root: str, path: str, token: str | None, accept: str = "application/json") -> tuple[int, str]:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{root}{path}", headers=headers), timeout=120
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _lease_process(lease_dir: str, owner: str, task: dict[str, str]) -> subprocess.Popen[str]:
    code = (
        "import time; from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease; "
        f"acquire_gpu_lease({LOCAL!r}, ['0', '1'], device_ids=['1'], lease_dir={lease_dir!r}, "
        f"owner={owner!r}, task={task!r}, poll_interval=0.1); print('held', flush=True); time.sleep(600)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def served(base_image, plugin_stack):
    """A labelled container and two lease processes, read by the shared api-server (see conftest.py).

    ``base_image`` comes first: without Docker this skips (fails with MLOPS_REQUIRE_DOCKER=1)
    before the shared stack is started for nothing.
    """
    lease_dir = plugin_stack.gpu_lease_dir
    name = f"mlops-plugin-gpu-{secrets.token_hex(4)}"
    labels = [f"--label=airflow-mlops.{k}={v}" for k, v in LABELLED.items()]
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--label=airflow-mlops.gpu-ids=0",
            *labels,
            base_image,
            "sleep",
            "600",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    holder = _lease_process(str(lease_dir), "gpu_train.fit/mlops-gpu-train-fit", HOLDER)
    waiter = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        waiter = _lease_process(str(lease_dir), "gpu_train.sweep/mlops-gpu-train-sweep-2", WAITER)
        yield plugin_stack.api, name, holder, waiter, plugin_stack.docker_down
    finally:
        for proc in (holder, waiter):
            if proc is not None:
                proc.kill()
                proc.wait()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _wait_for_waiter(api) -> dict:
    deadline = time.monotonic() + 60
    while True:
        status, body = _get(api.root, "/mlops/api/gpus", api.token)
        assert status == 200, body
        report = json.loads(body)
        local = next(h for h in report["docker"] if h["host"] == LOCAL)
        if local["waiting"] or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_gpus_json_shows_leases_waiters_containers_and_errors(served):
    api, name, holder, waiter, down = served
    report = _wait_for_waiter(api)
    local = next(h for h in report["docker"] if h["host"] == LOCAL)
    assert local["error"] is None
    assert local["inventory_source"] == f"[mlops] docker_host_gpus[{LOCAL!r}]"
    dev0, dev1 = local["devices"]
    assert (dev0["id"], dev0["name"], dev0["state"], dev0["lease"]) == ("0", "NVIDIA L4", "in use", None)
    (container,) = dev0["containers"]
    assert container["name"] == name
    assert container["gpu_ids"] == ["0"]
    assert container["task"]["href"] == "/dags/gpu_train/runs/manual__1/tasks/evaluate"
    assert [c["name"] for c in local["containers"]] == [name]

    assert (dev1["id"], dev1["state"]) == ("1", "leased")
    assert dev1["lease"]["owner"] == "gpu_train.fit/mlops-gpu-train-fit"
    assert dev1["lease"]["pid"] == holder.pid
    assert dev1["lease"]["task"]["href"] == "/dags/gpu_train/runs/manual__1/tasks/fit"

    (waiting,) = local["waiting"]
    assert waiting["owner"] == "gpu_train.sweep/mlops-gpu-train-sweep-2"
    assert waiting["pid"] == waiter.pid
    assert (waiting["count"], waiting["devices"]) == (1, ["1"])
    assert waiting["task"]["href"] == "/dags/gpu_train/runs/manual__1/tasks/sweep/mapped/2"

    unreachable = next(h for h in report["docker"] if h["host"] == down)
    assert unreachable["error"]
    assert unreachable["devices"][0]["state"] == "free"

    (cluster,) = report["kubernetes"]["clusters"]
    assert report["kubernetes"]["configured"] is True
    assert cluster["conn_id"] is None
    assert cluster["inventory"] is None
    assert cluster["error"]


def test_gpus_page_renders_the_same(served):
    api, name, *_ = served
    _wait_for_waiter(api)
    status, html = _get(api.root, "/mlops/gpus", api.token, accept="text/html")
    assert status == 200, html
    assert f'<h3 class="mono">{LOCAL}</h3>' in html
    assert '<a href="/dags/gpu_train/runs/manual__1/tasks/fit" target="_top">gpu_train / fit</a>' in html
    assert (
        'href="/dags/gpu_train/runs/manual__1/tasks/sweep/mapped/2" target="_top">gpu_train / sweep [2]</a>'
        in html
    )
    assert name in html
    assert "Docker engine tcp://127.0.0.1:" in html
    assert "did not answer" in html
    assert "Kubernetes (default kube config) did not answer" in html
    assert _get(api.root, "/mlops/api/gpus", None)[0] == 401
