"""Take the README's screenshots of the Airflow UI with headless Chromium (Debian's, via Playwright).

Run after ``make demo`` (it needs the demo's Airflow home with one pipeline run in it)::

    apt-get install -y chromium
    .venv/bin/python scripts/screenshots.py

It starts ``airflow api-server`` on a free loopback port against ``.demo/airflow`` and writes
``docs/images/trigger_form.png`` (the validated trigger form of ``mlops_training_pipeline``)
and ``docs/images/mapped_sweep.png`` (the mapped ``train`` task of the demo's run). Playwright
drives the system Chromium (``executable_path``); it never downloads a browser.
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
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
OUT = REPO / "docs" / "images"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def main() -> int:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        print("Debian's chromium is needed: apt-get install -y chromium", file=sys.stderr)
        return 2
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
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
        OUT.mkdir(parents=True, exist_ok=True)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
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
            browser.close()
        print(f"wrote {OUT / 'trigger_form.png'} and {OUT / 'mapped_sweep.png'}")
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
