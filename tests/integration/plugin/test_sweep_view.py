"""The Sweep tab, served by a real api-server, of a sweep run for real with `airflow dags test`.

One tracked sweep (a real ``mlflow server``): 6 trials in 3 mapped batches, one failing. The
fallback for a sweep whose select task failed (the trials' own records) is covered by
tests/unit/plugins/test_sweep_data.py on rows made by the sweep's own functions: a second real
DAG run would double this module's time. The run, the ``mlflow server`` and the api-server are
the package's shared stack (``plugin_stack`` in conftest.py), started once for four modules.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.plugin.conftest import SWEEP_DAG_ID as DAG_ID
from tests.integration.plugin.conftest import SWEEP_UI_URL as UI_URL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(plugin_stack):
    """The sweep run and the api-server of the package's shared stack (tests/integration/plugin/conftest.py)."""
    return {"api": plugin_stack.api, "tracked": plugin_stack.sweep_run_id, "mlflow": plugin_stack.mlflow.url}


def _get(api: Any, path: str, *, token: str | None = "api", accept: str = "application/json"):
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {api.token if token == 'api' else token}"
    request = urllib.request.Request(f"{api.root}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def _json(api: Any, path: str) -> dict[str, Any]:
    status, _, body = _get(api, path)
    assert status == 200, body
    return json.loads(body)


def test_tracked_sweep_leaderboard_best_failure_and_links(env):
    api, run_id = env["api"], env["tracked"]
    sweep = _json(api, f"/mlops/api/sweeps/{DAG_ID}/{run_id}")
    assert sweep["found"]
    assert sweep["complete"]
    assert sweep["notices"] == []
    assert sweep["counts"] == {"n_trials": 6, "n_succeeded": 5, "n_failed": 1, "n_cached": 0, "n_pending": 0}
    assert (sweep["metric"], sweep["mode"], sweep["params"]) == ("loss", "min", ["lr", "optimizer"])
    best = sweep["best"]
    assert best["params"] == {"lr": 0.001, "optimizer": "adam"}
    assert best["metric"] == pytest.approx(0.001)
    assert best["rank"] == 1
    assert best["status"] == "success"
    assert best["resources"] == {"gpus": 1}
    assert [r["metric"] for r in sweep["rows"][:5]] == pytest.approx([0.001, 0.01, 0.1, 0.501, 0.51])
    assert all(isinstance(r["duration"], (int, float)) for r in sweep["rows"])
    (failed,) = sweep["failed"]
    assert failed["params"] == {"lr": 0.1, "optimizer": "sgd"}
    assert failed["rank"] is None
    assert failed["error"] == "ValueError: diverged: loss is nan <script>alert(1)</script>"
    assert any("diverged" in line for line in failed["tail"])
    # each trial's task instance: the mapped batch that ran it (the REST API agrees)
    assert sorted({r["task"]["map_index"] for r in sweep["rows"]}) == [0, 1, 2]
    for row in sweep["rows"]:
        task = row["task"]
        assert (
            task["url"]
            == f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/train/mapped/{task['map_index']}"
        )
        status, body = api.call(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/train/xcomEntries/return_value"
            f"?map_index={task['map_index']}",
        )
        assert status == 200, body
        value = json.loads(body["value"]) if isinstance(body["value"], str) else body["value"]
        assert row["trial_id"] in {r["trial_id"] for r in value}
    # each trial's MLflow run exists, in the experiment the link names
    experiment = sweep["tracking"]["experiment_id"]
    assert sweep["tracking"]["experiment_name"] == DAG_ID
    assert experiment
    for row in sweep["rows"]:
        assert row["mlflow_url"] == f"{UI_URL}/#/experiments/{experiment}/runs/{row['mlflow_run_id']}"
        with urllib.request.urlopen(
            f"{env['mlflow']}/api/2.0/mlflow/runs/get?run_id={row['mlflow_run_id']}"
        ) as r:
            info = json.loads(r.read())["run"]["info"]
        assert info["experiment_id"] == experiment
    assert sweep["tracking"]["sweep_run_url"].startswith(f"{UI_URL}/#/experiments/{experiment}/runs/")
    charts = {c["param"]: c for c in sweep["charts"]}
    assert (charts["lr"]["scale"], charts["optimizer"]["scale"]) == ("log", "band")
    assert len(charts["lr"]["points"]) == 5
    assert [p["label"] for p in charts["lr"]["points"] if p["best"]] == [best["trial_id"]]


def test_tracked_sweep_page_shows_it_escaped_with_links_and_charts(env):
    api, run_id = env["api"], env["tracked"]
    sweep = _json(api, f"/mlops/api/sweeps/{DAG_ID}/{run_id}")
    status, headers, html = _get(api, f"/mlops/sweeps/{DAG_ID}/{run_id}", accept="text/html")
    assert status == 200
    assert "script-src 'self';" in headers["content-security-policy"]
    best = sweep["best"]
    assert f'<div class="value mono" id="best-trial">{best["trial_id"]}</div>' in html
    assert '<div class="value" id="best-metric">0.001</div>' in html
    assert html.count("<script") == 1  # the app's own links.js, nothing from the data
    assert '<script src="/mlops/assets/links.js" defer></script>' in html
    assert "ValueError: diverged: loss is nan &lt;script&gt;alert(1)&lt;/script&gt;" in html
    for row in sweep["rows"]:
        assert f'<a href="{row["task"]["url"]}" target="_top" class="ti-link">' in html
        assert (
            f'<a href="{row["mlflow_url"]}" target="_blank" rel="noopener noreferrer" class="mlflow-link">'
            in html
        )
    assert html.count('<tr class="best"') == 1
    assert html.count("<tr class=") == 6
    assert len(re.findall(r'<circle class="point', html)) == 5 + 5  # lr and optimizer charts
    assert html.count('class="point best"') == 2
    assert f'data-trial="{best["trial_id"]}"' in html


def test_unknown_run_and_no_token(env):
    api = env["api"]
    status, _, body = _get(api, f"/mlops/api/sweeps/{DAG_ID}/no_such_run")
    assert status == 404
    assert json.loads(body) == {"detail": f"DAG {DAG_ID!r} has no run 'no_such_run'"}
    status, _, html = _get(api, f"/mlops/sweeps/{DAG_ID}/no_such_run", accept="text/html")
    assert status == 404
    assert "has no run" in html
    assert _get(api, f"/mlops/api/sweeps/{DAG_ID}/{env['tracked']}", token=None)[0] == 401
    assert _get(api, f"/mlops/api/sweeps/{DAG_ID}/{env['tracked']}", token="not-a-jwt")[0] in (401, 403)
