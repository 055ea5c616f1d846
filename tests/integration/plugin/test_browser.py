"""The MLOps views in real Chromium, inside the real Airflow UI, on data of the example pipeline.

One module-scoped set-up: a real ``mlflow server``; the example pipeline
(``dags/mlops_training_pipeline.py``) run for last week by ``airflow dags test`` (what ``make
demo`` does) on the local runtime (trials as local processes: the fastest faithful runtime), which
fills the Feast repo, trains the sweep as MLflow runs, registers and promotes the model; then
Airflow's api-server, scheduler and dag-processor on loopback with two SimpleAuthManager users,
and a GPU lease held (and a second one waited for) by a helper process through the lease functions
GpuDockerOperator uses. Debian's Chromium, driven by Playwright (``executable_path``), signs in
through Airflow's own login form, opens the DAG run's Sweep tab and the MLOps nav pages, checks
the values they show, clicks through to a task instance and to MLflow's UI, and saves a
screenshot of each view under the test's tmp dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.conftest import REPO_ROOT, dags_test, docker_required
from tests.support.airflow_runs import latest_run_id, xcom_value
from tests.support.airflow_services import airflow_services, generated_passwords
from tests.support.mlflow_server import start_mlflow_server

if TYPE_CHECKING:
    from types import ModuleType

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "mlops_training_pipeline"
MODEL = "churn_classifier"
HOST = "unix://var/run/docker.sock"
#: A small run of the example: two trials of each family, 500 rows. Family B's space is narrowed
#: to weak trees so that family A (logistic regression) wins on the test set, which the
#: assertions below name. (A family-B winner is logged too: tests/integration/pipeline/
#: test_log_winner.py.)
CONF = {
    "n_trials": 2,
    "rows_per_week": 500,
    "search_space_b": {
        "family": "B",
        "learning_rate": [0.0001, 0.001],
        "max_depth": [1],
        "max_iter": {"distribution": "int", "low": 1, "high": 3},
    },
}
CHROMIUM = Path("/usr/bin/chromium")


def _screenshots() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mlops_screenshots", REPO_ROOT / "scripts" / "screenshots.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui = _screenshots()


def _last_monday() -> datetime:
    now = datetime.now(timezone.utc)
    return (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if docker_required():  # CI's mandatory mode: .ci/run installs chromium
        pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def stack(airflow_db, chromium, tmp_path_factory):
    """The example pipeline's run, then Airflow on loopback; yields what the tests compare to."""
    work = tmp_path_factory.mktemp("browser")
    server = start_mlflow_server(work / "mlflow")
    home = work / "example"
    leases = work / "leases"
    env = {
        "MLOPS_EXAMPLE_HOME": str(home),
        "MLOPS_EXAMPLE_RUNTIME": "local",
        "MLOPS_EXAMPLE_MODEL_NAME": MODEL,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": server.url}),
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps(
            {"conn_type": "feast", "extra": {"repo_path": str(home / "feature_repo")}}
        ),
        "AIRFLOW__MLOPS__DOCKER_HOST_GPUS": json.dumps(
            {"0": "NVIDIA A100-SXM4-80GB", "1": "NVIDIA A100-SXM4-80GB"}
        ),
        "AIRFLOW__MLOPS__GPU_LEASE_DIR": str(leases),
        # The first Features page builds the Feast store; on 2 loaded CI cores that can take
        # longer than the 5 s default, which would show the (tested elsewhere) timeout notice.
        "AIRFLOW__MLOPS__PLUGIN_BACKEND_TIMEOUT": "60",
    }
    holder = None
    try:
        logical = _last_monday()
        proc = dags_test(
            DAG_ID,
            REPO_ROOT / "dags",
            logical_date=logical.isoformat(),
            conf=json.dumps(CONF),
            extra_env=env,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert "state=success" in out, out[-6000:]
        summary = json.loads((home / "summary.json").read_text())
        from mlflow import MlflowClient

        client = MlflowClient(server.url)
        run_id = latest_run_id(DAG_ID)
        task = {"dag_id": DAG_ID, "task_id": "train", "run_id": run_id, "map_index": "0"}
        holder = subprocess.Popen(
            [sys.executable, "-c", ui.LEASE_HOLDER, HOST, str(leases), json.dumps(task)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "leased"
        logs = work / "services"
        logs.mkdir()
        with airflow_services(REPO_ROOT / "dags", logs, users="alice:viewer,bob:viewer", **env) as api:
            password = generated_passwords(Path(os.environ["AIRFLOW_HOME"]))["alice"]
            yield {
                "api": api,
                "password": password,
                "run_id": run_id,
                "summary": summary,
                "client": client,
                "server": server,
                "logical": logical,
                "shots": tmp_path_factory.mktemp("screenshots"),
                "logs": logs,
            }
    finally:
        if holder is not None and holder.poll() is None:
            os.killpg(holder.pid, signal.SIGTERM)
            holder.wait(timeout=30)
        server.stop()


@pytest.fixture(scope="module")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = ui.launch(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _shot(page, stack, name: str) -> Path:
    ui.fit_to_frame(page, max_height=2400)
    path = stack["shots"] / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1440, "height": 1000})
    assert path.stat().st_size > 10_000, path
    return path


def test_a_plugin_page_needs_a_sign_in_then_the_login_form_signs_in(page, stack):
    root = stack["api"].root
    answer = page.goto(f"{root}/mlops/models")
    assert answer is not None
    assert answer.status == 401
    assert "Sign in to Airflow" in page.locator("h1").inner_text()
    ui.sign_in(page, root, "alice", stack["password"])
    assert "_token" in {cookie["name"] for cookie in page.context.cookies()}
    answer = page.goto(f"{root}/mlops/api/models")
    assert answer is not None
    assert answer.status == 200


def test_sweep_tab_shows_the_leaderboard_best_trial_and_charts(page, stack):
    summary, run_id = stack["summary"], stack["run_id"]
    board = summary["leaderboard"]
    best = board[0]
    frame = ui.open_sweep_tab(page, stack["api"].root, DAG_ID, run_id)
    assert frame.locator("#best-trial").inner_text() == best["trial_id"]
    assert frame.locator("#best-metric").inner_text() == f"{best['metrics']['val_auc']:.6g}"
    rows = frame.locator("table.leaderboard tbody tr")
    assert rows.count() == summary["trials"] == len(board) == 4
    shown = [rows.nth(i).get_attribute("data-trial") for i in range(rows.count())]
    assert shown == [row["trial_id"] for row in board]
    for i, row in enumerate(board):
        cells = rows.nth(i)
        assert cells.locator("td.metric").inner_text() == f"{row['metrics']['val_auc']:.6g}"
        assert cells.locator(".badge").first.inner_text() == "success"
    assert frame.locator(".card", has_text="Succeeded").locator(".value").inner_text() == "4"
    assert frame.locator(".card", has_text="Failed").locator(".value").inner_text() == "0"
    # One chart per hyper-parameter, each with a point per trial that has it.
    params = {
        frame.locator(".chart").nth(i).get_attribute("data-param")
        for i in range(frame.locator(".chart").count())
    }
    # (Parameters with one value in the whole sweep, like max_depth here, get no chart.)
    assert {"family", "C", "learning_rate"} <= params, params
    assert frame.locator('.chart[data-param="C"] svg circle').count() >= 2
    _shot(page, stack, "sweep")


def test_sweep_links_lead_to_the_trial_task_instance_and_its_mlflow_run(page, stack):
    summary, run_id, client = stack["summary"], stack["run_id"], stack["client"]
    root = stack["api"].root
    best = summary["leaderboard"][0]
    frame = ui.open_sweep_tab(page, root, DAG_ID, run_id)
    row = frame.locator(f'table.leaderboard tr[data-trial="{best["trial_id"]}"]')
    run = client.get_run(best["mlflow_run_id"])
    mlflow = row.locator("a.mlflow-link")
    expected = f"{stack['server'].url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert mlflow.get_attribute("href") == expected
    assert mlflow.get_attribute("target") == "_blank"
    assert mlflow.get_attribute("rel") == "noopener noreferrer"
    task = row.locator("a.ti-link")
    map_index = int(task.inner_text().split("[")[1].rstrip("]"))
    href = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/train/mapped/{map_index}"
    assert task.get_attribute("href") == href
    assert task.get_attribute("target") == "_top"
    # Follow both: MLflow's UI shows the trial's run; Airflow's shows the mapped task instance.
    _follow_mlflow(page, expected, run.info.run_name)
    page.goto(root + href, wait_until="networkidle")
    page.get_by_text("Map Index").first.wait_for()
    assert page.url == root + href


def test_clicking_a_link_inside_the_airflow_frame_leaves_the_frame(page, stack):
    frame = ui.open_sweep_tab(page, stack["api"].root, DAG_ID, stack["run_id"])
    frame.locator("a.ti-link").first.click()
    page.wait_for_url("**/tasks/train/mapped/*", timeout=15_000)
    # A target=_blank link (the trial's MLflow run) opens MLflow's UI in a new tab.
    frame = ui.open_sweep_tab(page, stack["api"].root, DAG_ID, stack["run_id"])
    link = frame.locator("a.mlflow-link").first
    expected = link.get_attribute("href")
    with page.context.expect_page(timeout=15_000) as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == expected
    assert tab.url.startswith(stack["server"].url)
    tab.close()


def test_models_view_shows_the_registered_version_aliases_and_promotion(page, stack):
    summary, client = stack["summary"], stack["client"]
    version = str(summary["registered_version"])
    assert summary["promoted"] is True
    frame = ui.open_nav_view(page, stack["api"].root, "Models")
    row = frame.locator("table.models tbody tr", has_text=MODEL)
    assert row.locator("td.num").first.inner_text() == version
    aliases = sorted(row.locator(".badge.alias").all_inner_texts())
    assert aliases == [f"champion: v{version}", f"production: v{version}"]
    assert row.locator(".badge.promoted").inner_text() == "promote"
    row.locator("a", has_text=MODEL).click()
    frame.locator("table.versions").wait_for()
    versions = frame.locator("table.versions tbody tr")
    assert versions.count() == 1
    first = versions.first
    assert first.locator("td").first.inner_text() == version
    assert sorted(first.locator(".badge.alias").all_inner_texts()) == ["champion", "production"]
    registered = client.get_model_version(MODEL, version)
    assert first.locator("td.mono").inner_text() == registered.run_id
    assert first.get_by_role("link", name=stack["run_id"]).count() == 1
    promotion = frame.locator("table.promotions tbody tr").first
    assert promotion.locator(".badge").inner_text() == "promote"
    assert f"{summary['test_auc']:.4g}" in promotion.inner_text()
    _shot(page, stack, "models")
    # MLflow's own page of the version.
    link = first.get_by_role("link", name="open")
    expected = f"{stack['server'].url}/#/models/{MODEL}/versions/{version}"
    assert link.get_attribute("href") == expected
    assert link.get_attribute("target") == "_blank"
    _follow_mlflow(page, expected, f"Version {version}")


def test_features_view_marks_the_example_view_fresh_with_its_rows_and_dag(page, stack):
    frame = ui.open_nav_view(page, stack["api"].root, "Features")
    row = frame.locator('tr[data-view="customer_features"]')
    assert row.locator(".badge").inner_text() == "fresh"
    assert frame.locator(".card", has_text="Fresh").locator(".value").inner_text() == "1"
    materialized = _materialized_rows(stack)
    assert row.locator("td.num").nth(3).inner_text() == f"{materialized:.4g}"
    assert materialized > 0
    _shot(page, stack, "features")
    link = row.get_by_role("link", name=DAG_ID)
    assert link.get_attribute("href") == f"/dags/{DAG_ID}"
    assert link.get_attribute("target") == "_top"


def test_gpus_view_shows_the_lease_holder_and_the_waiting_task(page, stack):
    run_id = stack["run_id"]
    frame = ui.open_nav_view(page, stack["api"].root, "GPUs")
    leased = frame.locator('tr[data-device="0"]')
    assert leased.locator(".badge").inner_text() == "leased"
    assert f"{DAG_ID} / train" in leased.inner_text()
    assert run_id in leased.inner_text()
    assert frame.locator('tr[data-device="1"] .badge').inner_text() == "free"
    waiting = frame.locator("table.gpu-waiting tbody tr")
    assert waiting.count() == 1
    assert f"{DAG_ID} / train [1]" in waiting.inner_text()
    _shot(page, stack, "gpus")
    link = leased.get_by_role("link", name=f"{DAG_ID} / train [0]")
    assert link.get_attribute("href") == f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/train/mapped/0"
    assert link.get_attribute("target") == "_top"


def _follow_mlflow(page, url: str, text: str) -> None:
    """Open ``url`` in a new tab of the same browser; MLflow's UI must show ``text``."""
    tab = page.context.new_page()
    try:
        tab.goto(url, wait_until="load")
        tab.get_by_text(text).first.wait_for(timeout=60_000)
    finally:
        tab.close()


def _materialized_rows(stack: dict[str, Any]) -> int:
    """The rows the run's ``feast_materialize`` task reported (its return value XCom)."""
    value = xcom_value(stack["api"], DAG_ID, quote(stack["run_id"], safe=""), "feast_materialize")
    assert isinstance(value, dict), value
    assert "customer_features" in value, value
    return int(value["customer_features"]["rows"])
