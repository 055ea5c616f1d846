"""Take the README's screenshots of the Airflow UI with headless Chromium (Debian's, via Playwright).

Run after ``make demo`` (it needs the demo's Airflow home with one pipeline run in it)::

    apt-get install -y chromium
    .venv/bin/python scripts/screenshots.py

It starts ``airflow api-server`` on a free loopback port against ``.demo/airflow``, with the
demo's ``mlflow_default`` and ``feast_default`` connections, and writes to ``docs/images/``:

- ``trigger_form.png``: the validated trigger form of ``mlops_training_pipeline``;
- ``mapped_sweep.png``: the mapped ``train`` task of the demo's run;
- ``mlops_sweep.png``: the run's **Sweep** tab (the plugin's leaderboard, charts, best trial);
- ``mlops_models.png``: **MLOps > Models** and the registered model's page;
- ``mlops_features.png``: **MLOps > Features** (freshness of the example's feature view);
- ``mlops_gpus.png``: **MLOps > GPUs**. The demo trains without GPUs, so for this picture the
  script declares a stand-in inventory of two devices (``[mlops] docker_host_gpus``) and a helper
  process leases device 0 for the run's ``train`` task and waits for it a second time, through
  the same lease functions GpuDockerOperator uses.

Playwright drives the system Chromium (``executable_path``); it never downloads a browser. The
helpers here (:func:`sign_in`, :func:`open_nav_view`, :func:`open_sweep_tab`) are also what
``tests/integration/plugin/test_browser.py`` and ``benchmarks/plugin_views.py`` use to drive the UI.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FrameLocator, Page, Playwright

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
OUT = REPO / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The plugin's nav entries (``MLOps`` category of the UI's Plugins menu) and their UI routes.
NAV_VIEWS = {"Models": "mlops-models", "Features": "mlops-features", "GPUs": "mlops-gpus"}
#: The helper that holds a GPU lease (and waits for a second one) for the GPUs screenshot.
LEASE_HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease, lease_dir_for_host, try_lease_ids
    host, base, task = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    lease = try_lease_ids(host, ["0"], 1, lease_dir=lease_dir_for_host(host, base), owner="screenshots", task=task)
    assert lease is not None, "device 0 is leased already"
    print("leased", flush=True)
    waiting = dict(task, map_index=str(int(task["map_index"]) + 1))
    acquire_gpu_lease(host, ["0", "1"], device_ids=["0"], lease_dir=base, owner="screenshots-waiting", task=waiting)
    """
)


def launch(pw: Playwright) -> Browser:
    """Start Debian's headless Chromium (never a downloaded one)."""
    chromium = shutil.which("chromium") or CHROMIUM
    return pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)


def sign_in(page: Page, root: str, username: str, password: str) -> None:
    """Sign in through Airflow's own login form (the SimpleAuthManager's), as a person does."""
    page.goto(f"{root}/", wait_until="networkidle")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
    page.wait_for_load_state("networkidle")


def view_frame(page: Page) -> FrameLocator:
    """The plugin page inside the Airflow UI (an iframe), once its heading is there."""
    frame = page.frame_locator("iframe")
    frame.locator("main h1").wait_for(timeout=60_000)
    return frame


def open_nav_view(page: Page, root: str, name: str) -> FrameLocator:
    """Open a nav page through the UI's menu (from its home page): Plugins > MLOps > ``name``; return its frame."""
    page.goto(f"{root}/", wait_until="networkidle")
    page.get_by_role("button", name="Plugins").click()
    page.get_by_role("menuitem", name="MLOps").hover()
    page.get_by_role("menuitem", name=name, exact=True).click()
    page.wait_for_url(f"**/plugin/{NAV_VIEWS[name]}", timeout=60_000)
    return view_frame(page)


def open_sweep_tab(page: Page, root: str, dag_id: str, run_id: str) -> FrameLocator:
    """Open the DAG run's page, then its **Sweep** tab; return the tab's frame."""
    page.goto(f"{root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}", wait_until="networkidle")
    page.locator('a[href$="/plugin/mlops-sweep"]').click()
    page.wait_for_url("**/plugin/mlops-sweep", timeout=60_000)
    return view_frame(page)


def fit_to_frame(page: Page, width: int = 1440, max_height: int = 3000) -> None:
    """Make the viewport tall enough that the plugin page's frame shows it whole."""
    frame = page.frame(url=lambda url: "/mlops/" in url)
    if frame is None:
        return
    content = int(frame.evaluate("document.documentElement.scrollHeight"))
    top = int(page.evaluate("document.querySelector('iframe').getBoundingClientRect().top"))
    page.set_viewport_size({"width": width, "height": min(max_height, max(900, top + content + 40))})
    page.wait_for_timeout(500)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def demo_connections() -> dict[str, str]:
    """The connections ``scripts/demo.py`` runs with (the MLflow UI it tells the user to start)."""
    return {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {
                "conn_type": "mlflow",
                "extra": {
                    "tracking_uri": f"sqlite:///{DEMO / 'mlflow.db'}",
                    "ui_url": "http://localhost:5000",
                },
            }
        ),
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(
            {"conn_type": "feast", "extra": {"repo_path": str(DEMO / "example" / "feature_repo")}}
        ),
    }


def _shoot_views(page: Page, base: str, run_id: str) -> list[Path]:
    """The four plugin views, each inside the Airflow UI, into docs/images/mlops_*.png."""
    written = []
    open_sweep_tab(page, base, "mlops_training_pipeline", run_id)
    fit_to_frame(page)
    page.screenshot(path=str(OUT / "mlops_sweep.png"))
    written.append(OUT / "mlops_sweep.png")
    page.set_viewport_size({"width": 1440, "height": 1000})
    frame = open_nav_view(page, base, "Models")
    frame.locator("table.models a").first.click()
    frame.locator("table.versions").wait_for(timeout=60_000)
    fit_to_frame(page, max_height=1400)
    page.screenshot(path=str(OUT / "mlops_models.png"))
    written.append(OUT / "mlops_models.png")
    for name in ("Features", "GPUs"):
        page.set_viewport_size({"width": 1440, "height": 1000})
        open_nav_view(page, base, name)
        fit_to_frame(page, max_height=1400)
        path = OUT / f"mlops_{name.lower()}.png"
        page.screenshot(path=str(path))
        written.append(path)
    return written


def main() -> int:
    chromium = shutil.which("chromium") or CHROMIUM
    if not Path(chromium).exists():
        print("Debian's chromium is needed: apt-get install -y chromium", file=sys.stderr)
        return 2
    port = free_port()
    leases = Path(tempfile.mkdtemp(prefix="mlops-screenshot-leases-"))
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__MLOPS__DOCKER_HOST_GPUS": json.dumps(
                {"0": "NVIDIA A100-SXM4-80GB", "1": "NVIDIA A100-SXM4-80GB"}
            ),
            "AIRFLOW__MLOPS__GPU_LEASE_DIR": str(leases),
            **demo_connections(),
        }
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    log = open(DEMO / "screenshots-api-server.log", "wb")
    server = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    holder: subprocess.Popen[str] | None = None
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                get_json(f"{base}/api/v2/monitor/health")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print((DEMO / "screenshots-api-server.log").read_text()[-3000:], file=sys.stderr)
                    return 1
                time.sleep(1)
        runs = get_json(f"{base}/api/v2/dags/mlops_training_pipeline/dagRuns?order_by=-start_date&limit=1")
        run_id = runs["dag_runs"][0]["dag_run_id"]
        task = {"dag_id": "mlops_training_pipeline", "task_id": "train", "run_id": run_id, "map_index": "0"}
        holder = subprocess.Popen(
            [sys.executable, "-c", LEASE_HOLDER, "unix://var/run/docker.sock", str(leases), json.dumps(task)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "leased":
            print("the lease helper could not lease device 0", file=sys.stderr)
            return 1
        OUT.mkdir(parents=True, exist_ok=True)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = launch(pw)
            # Tall enough for the whole trigger dialog with its parameter form open.
            page = browser.new_page(viewport={"width": 1440, "height": 2800})
            page.goto(f"{base}/dags/mlops_training_pipeline", wait_until="networkidle")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            section = dialog.get_by_role("button", name="Run Parameters")
            section.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            # The section may open by itself (it does when the DAG has params): a click would close it.
            if section.get_attribute("aria-expanded") != "true":
                section.click()
            dialog.locator("button[aria-expanded=true]", has_text="Run Parameters").wait_for(timeout=30_000)
            dialog.get_by_text("Search space, family A").first.wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(1500)
            if section.get_attribute("aria-expanded") != "true":
                raise SystemExit("the trigger dialog's Run Parameters section did not stay open")
            dialog.screenshot(path=str(OUT / "trigger_form.png"))
            page.keyboard.press("Escape")
            page.set_viewport_size({"width": 1440, "height": 1000})
            page.goto(
                f"{base}/dags/mlops_training_pipeline/runs/{run_id}/tasks/train/mapped",
                wait_until="networkidle",
            )
            page.wait_for_timeout(1500)
            page.screenshot(path=str(OUT / "mapped_sweep.png"), full_page=True)
            written = [OUT / "trigger_form.png", OUT / "mapped_sweep.png"]
            written += _shoot_views(page, base, run_id)
            browser.close()
        print("wrote " + ", ".join(str(path) for path in written))
        return 0
    finally:
        if holder is not None and holder.poll() is None:
            os.killpg(holder.pid, signal.SIGTERM)
            holder.wait(timeout=30)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(leases, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
