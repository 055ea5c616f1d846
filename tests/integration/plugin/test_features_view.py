"""The Features page against a real Feast repo materialized by a real ``airflow dags test`` run.

One repo with three feature views: ``fv_0`` (TTL 10 years: fresh), ``fv_1`` (tag
``mlops.freshness_threshold: 2h``: stale, the window ended in 2024) and ``fv_2`` (never
materialized); a second ``feast`` connection names a repo that does not exist (a notice). A real
api-server serves ``/mlops/features`` and ``/mlops/api/features`` to a signed-in viewer (the
package's shared stack: ``plugin_stack`` in conftest.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from urllib.parse import quote

import pytest

from tests.integration.plugin.conftest import FEATURES_DAG_ID as DAG_ID
from tests.integration.plugin.conftest import REDIS_PASSWORD

pytestmark = pytest.mark.integration


def _get(root: str, path: str, token: str | None, accept: str = "application/json") -> tuple[int, str]:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{root}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def served(plugin_stack):
    """The Feast repo, its DAG run and the api-server of the shared stack (tests/integration/plugin/conftest.py)."""
    return plugin_stack.api, plugin_stack.feast_repo, plugin_stack.features_run_id


def test_features_json_shows_windows_freshness_and_runs(served):
    api, repo, run_id = served
    status, body = _get(api.root, "/mlops/api/features", api.token)
    assert status == 200, body
    report = json.loads(body)
    assert REDIS_PASSWORD not in body
    by_conn = {c["conn_id"]: c for c in report["connections"]}
    assert sorted(by_conn) == ["feast_broken", "feast_plugin"]

    broken = by_conn["feast_broken"]
    assert broken["views"] == []
    assert "feast_broken" in broken["error"]
    assert "is not a directory" in broken["error"]

    plugin = by_conn["feast_plugin"]
    assert plugin["error"] is None
    assert plugin["project"] == "plugin_view"
    views = {v["name"]: v for v in plugin["views"]}
    assert sorted(views) == ["fv_0", "fv_1", "fv_2"]
    assert report["counts"] == {"fresh": 1, "stale": 1, "never": 1, "unknown": 0}

    fresh, stale, never = views["fv_0"], views["fv_1"], views["fv_2"]
    assert fresh["status"] == "fresh"
    assert fresh["limit_source"] == "ttl"
    assert fresh["limit_seconds"] == fresh["ttl_seconds"] == 3650 * 86400
    assert fresh["last_window"] == ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"]
    assert fresh["most_recent_end_time"] == "2024-01-02T00:00:00+00:00"
    assert fresh["age_seconds"] > 365 * 86400

    assert stale["status"] == "stale"
    assert (stale["limit_source"], stale["limit_seconds"]) == ("tag", 7200)
    assert stale["tags"] == {"mlops.freshness_threshold": "2h"}

    assert never["status"] == "never"
    assert never["last_window"] is None
    assert never["materialized_by"] is None

    # Rows written by the last materialize task: the mapped task instance that held each view.
    for index, name in enumerate(["fv_0", "fv_1"]):
        run = views[name]["materialized_by"]
        assert (run["dag_id"], run["run_id"], run["task_id"]) == (DAG_ID, run_id, "materialize")
        assert run["dag_href"] == f"/dags/{DAG_ID}"
        (task,) = run["tasks"]
        assert task["map_index"] == index
        assert (
            task["href"] == f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/materialize/mapped/{index}"
        )
        window = [datetime.fromisoformat(w) for w in fresh["last_window"]]
        expected_rows = len(repo.expected_latest(name, *window))
        assert run["rows"] == task["rows"] == expected_rows > 0
        assert run["window"] == fresh["last_window"]


def test_features_page_renders_badges_links_and_the_notice(served):
    api, _, run_id = served
    status, html = _get(api.root, "/mlops/features", api.token, accept="text/html")
    assert status == 200, html
    assert '<span class="badge fresh">fresh</span>' in html
    assert '<span class="badge stale">stale</span>' in html
    assert "never materialized" in html
    assert "Feast connection feast_broken: AirflowFailException" in html
    assert f'<a href="/dags/{DAG_ID}" target="_top">{DAG_ID}</a>' in html
    href = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/materialize/mapped/1"
    assert f'href="{href}" target="_top"' in html
    assert "2024-01-01 00:00 UTC → 2024-01-02 00:00 UTC" in html
    assert "2h 00m" in html  # fv_1's limit from its tag
    assert REDIS_PASSWORD not in html


def test_features_need_a_signed_in_user(served):
    api, _, run_id = served
    assert _get(api.root, "/mlops/api/features", None)[0] == 401
    assert _get(api.root, "/mlops/api/features", "not-a-token")[0] in (401, 403)
