"""The sweep view's data shaping: XCom rows and task instances of a run -> leaderboard, links, charts.

The rows are made by the sweep's own functions (``trials_from_grid``, ``batch_trials``,
``select_best``, ``rank_rungs``), shaped as ``airflow_ui.xcom_values`` returns them.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_mlops_provider.plugins.sweep_data import chart_series, rank_records, shape_sweep, ti_url
from airflow_mlops_provider.sweeps.batching import batch_trials
from airflow_mlops_provider.sweeps.halving import rank_rungs
from airflow_mlops_provider.sweeps.records import failed_record
from airflow_mlops_provider.sweeps.select import select_best
from airflow_mlops_provider.sweeps.space import trials_from_grid

SPACE = {"lr": [0.001, 0.01, 0.1], "optimizer": ["adam", "sgd"]}
TRACKING = {
    "mlflow_conn_id": "mlflow_default",
    "experiment_name": "exp",
    "experiment_id": "7",
    "parent_run_id": "p1",
}


def _record(trial: dict[str, Any], index: int) -> dict[str, Any]:
    if trial["hparams"]["lr"] == 0.1 and trial["hparams"]["optimizer"] == "sgd":
        record = failed_record(trial, "RuntimeError: <script>alert(1)</script>", tail=["Traceback", "boom"])
    else:
        loss = trial["hparams"]["lr"] + (0.5 if trial["hparams"]["optimizer"] == "sgd" else 0)
        record = {**trial, "status": "success", "metrics": {"loss": loss}}
    return {**record, "cached": False, "mlflow_run_id": f"run{index}", "seconds": 1.5 + index}


def _run(*, select: bool = True, drop_batch: int | None = None, max_tasks: int = 3):
    """XCom rows and TIs of a sweep of 6 trials in ``max_tasks`` batches; batch ``drop_batch``'s task died."""
    trials = trials_from_grid(SPACE, resources={"gpus": 1})
    batches = batch_trials(trials, max_parallel_tasks=max_tasks)
    rows = [
        {
            "task_id": "plan_sweep",
            "map_index": -1,
            "key": "sweep_plan",
            "value": {"trials": trials, "cached": [], "tracking": TRACKING, "metric": "loss", "mode": "min"},
        }
    ]
    tis = [{"task_id": "plan_sweep", "map_index": -1, "state": "success"}]
    records = []
    n = 0
    for index, batch in enumerate(batches):
        rows.append(
            {
                "task_id": "plan_sweep",
                "map_index": -1,
                "key": f"sweep_batch_{index}",
                "value": batch["trials"],
            }
        )
        if index == drop_batch:
            tis.append({"task_id": "train", "map_index": index, "state": "failed"})
            continue
        out = []
        for trial in batch["trials"]:
            out.append(_record(trial, n))
            n += 1
        records += out
        rows.append({"task_id": "train", "map_index": index, "key": "return_value", "value": out})
        tis.append({"task_id": "train", "map_index": index, "state": "success"})
    if select:
        result = select_best(records, metric="loss", mode="min", expected_trials=trials)
        result["n_cached"] = 0
        rows.append({"task_id": "select_best_trial", "map_index": -1, "key": "return_value", "value": result})
        tis.append({"task_id": "select_best_trial", "map_index": -1, "state": "success"})
    return trials, batches, rows, tis


def test_select_result_gives_leaderboard_best_links_and_charts():
    trials, batches, rows, tis = _run()
    sweep = shape_sweep(
        rows,
        tis,
        dag_id="d",
        run_id="manual__1",
        run_state="success",
        mlflow_ui={"url": "http://mlflow:5000"},
    )
    assert sweep["found"]
    assert sweep["complete"]
    assert sweep["kind"] == "single"
    assert (sweep["metric"], sweep["mode"], sweep["params"]) == ("loss", "min", ["lr", "optimizer"])
    assert sweep["counts"] == {"n_trials": 6, "n_succeeded": 5, "n_failed": 1, "n_cached": 0, "n_pending": 0}
    best = sweep["best"]
    assert best["params"] == {"lr": 0.001, "optimizer": "adam"}
    assert best["metric"] == 0.001
    assert best["rank"] == 1
    assert [r["rank"] for r in sweep["rows"]] == [1, 2, 3, 4, 5, None]
    assert [r["metric"] for r in sweep["rows"][:5]] == sorted(r["metric"] for r in sweep["rows"][:5])
    failed = sweep["failed"]
    assert [f["params"] for f in failed] == [{"lr": 0.1, "optimizer": "sgd"}]
    assert failed[0]["error"] == "RuntimeError: <script>alert(1)</script>"
    assert failed[0]["tail"] == [
        "Traceback",
        "boom",
    ]
    # each trial links to the mapped task instance of its batch, and to its MLflow run
    batch_of = {t["trial_id"]: i for i, b in enumerate(batches) for t in b["trials"]}
    for row in sweep["rows"]:
        i = batch_of[row["trial_id"]]
        assert row["task"] == {
            "task_id": "train",
            "map_index": i,
            "state": "success",
            "url": f"/dags/d/runs/manual__1/tasks/train/mapped/{i}",
        }
        assert row["mlflow_url"] == f"http://mlflow:5000/#/experiments/7/runs/{row['mlflow_run_id']}"
        assert row["resources"] == {"gpus": 1}
        assert row["duration"] >= 1.5
    assert sweep["tracking"]["sweep_run_url"] == "http://mlflow:5000/#/experiments/7/runs/p1"
    assert sweep["select_task"] == "/dags/d/runs/manual__1/tasks/select_best_trial"
    charts = {c["param"]: c for c in sweep["charts"]}
    assert charts["lr"]["scale"] == "log"
    assert charts["optimizer"]["scale"] == "band"
    assert len(charts["lr"]["points"]) == 5
    assert [p["label"] for p in charts["lr"]["points"] if p["best"]] == [best["trial_id"]]
    assert sweep["notices"] == []


def test_failed_select_falls_back_to_plan_and_trial_records():
    """The select task failed and one batch's task died: every planned trial still shows."""
    trials, batches, rows, tis = _run(select=False, drop_batch=1)
    tis.append({"task_id": "select_best_trial", "map_index": -1, "state": "failed"})
    sweep = shape_sweep(rows, tis, dag_id="d", run_id="r", run_state="failed", mlflow_ui={})
    assert not sweep["complete"]
    assert sweep["notices"][0]["level"] == "error"
    assert len(sweep["rows"]) == 6
    dead = {t["trial_id"] for t in batches[1]["trials"]}
    by_id = {r["trial_id"]: r for r in sweep["rows"]}
    for trial_id in dead:
        assert by_id[trial_id]["status"] == "failed"
        assert by_id[trial_id]["error"] == "no result: its task did not finish"
        # the link still finds the batch's task instance, from the plan's batches
        assert by_id[trial_id]["task"]["url"] == "/dags/d/runs/r/tasks/train/mapped/1"
        assert by_id[trial_id]["task"]["state"] == "failed"
    ranked = [r for r in sweep["rows"] if r["rank"] is not None]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert sweep["best"]["trial_id"] == ranked[0]["trial_id"]
    assert all(r["mlflow_url"] is None for r in sweep["rows"])  # no MLflow UI URL: no links


def test_running_sweep_shows_pending_trials():
    trials, batches, rows, tis = _run(select=False, drop_batch=2)
    tis = [ti if ti["map_index"] != 2 else {**ti, "state": "running"} for ti in tis]
    sweep = shape_sweep(rows, tis, dag_id="d", run_id="r", run_state="running")
    assert sweep["notices"][0]["level"] == "warn"
    assert sweep["counts"]["n_pending"] == len(batches[2]["trials"])
    assert {r["status"] for r in sweep["rows"] if r["task"]["map_index"] == 2} == {"running"}


def test_cached_trials_have_no_task_but_their_mlflow_run():
    trials = trials_from_grid({"x": [1, 2]})
    cached = [
        {**trials[0], "status": "success", "metrics": {"loss": 1.0}, "cached": True, "mlflow_run_id": "old"}
    ]
    live = [
        {**trials[1], "status": "success", "metrics": {"loss": 2.0}, "cached": False, "mlflow_run_id": "new"}
    ]
    result = {**select_best([*live, *cached], metric="loss"), "n_cached": 1}
    rows = [
        {
            "task_id": "plan_sweep",
            "map_index": -1,
            "key": "sweep_plan",
            "value": {
                "trials": trials,
                "cached": cached,
                "tracking": TRACKING,
                "metric": "loss",
                "mode": "min",
            },
        },
        {"task_id": "plan_sweep", "map_index": -1, "key": "sweep_batch_0", "value": [trials[1]]},
        {"task_id": "train", "map_index": 0, "key": "return_value", "value": live},
        {"task_id": "select_best_trial", "map_index": -1, "key": "return_value", "value": result},
    ]
    sweep = shape_sweep(rows, [], dag_id="d", run_id="r", run_state="success", mlflow_ui={"url": "http://m"})
    first, second = sweep["rows"]
    assert (first["status"], first["task"], first["mlflow_url"]) == (
        "cached",
        None,
        "http://m/#/experiments/7/runs/old",
    )
    assert (second["status"], second["task"]["map_index"]) == ("success", 0)
    assert sweep["counts"]["n_cached"] == 1
    # one parameter only, and it varies: one chart; a constant would get none
    assert [c["param"] for c in sweep["charts"]] == ["x"]
    assert sweep["charts"][0]["scale"] == "linear"


def test_halving_sweep_shows_rungs_and_links_each_rung_task():
    trials = trials_from_grid({"x": [1, 2, 3]})
    rung0 = [{**t, "rung": 0, "budget": 1} for t in trials]
    rung1 = [{**rung0[0], "rung": 1, "budget": 3}]
    rec0 = [{**t, "status": "success", "metrics": {"loss": float(t["hparams"]["x"])}} for t in rung0]
    rec1 = [{**rung1[0], "status": "success", "metrics": {"loss": 0.5}}]
    result = rank_rungs([rec0, rec1], metric="loss", mode="min", min_success_ratio=0.5)
    rows = [
        {
            "task_id": "rung_1.plan",
            "map_index": -1,
            "key": "sweep_plan",
            "value": {
                "trials": rung0,
                "cached": [],
                "tracking": None,
                "metric": "loss",
                "mode": "min",
                "rung": 0,
            },
        },
        {
            "task_id": "rung_2.plan",
            "map_index": -1,
            "key": "sweep_plan",
            "value": {
                "trials": rung1,
                "cached": [],
                "tracking": None,
                "metric": "loss",
                "mode": "min",
                "rung": 1,
            },
        },
        {"task_id": "rung_1.plan", "map_index": -1, "key": "sweep_batch_0", "value": rung0},
        {"task_id": "rung_2.plan", "map_index": -1, "key": "sweep_batch_0", "value": rung1},
        {"task_id": "rung_1.train", "map_index": 0, "key": "return_value", "value": rec0},
        {"task_id": "rung_2.train", "map_index": 0, "key": "return_value", "value": rec1},
        {
            "task_id": "select_best",
            "map_index": -1,
            "key": "return_value",
            "value": {**result, "kind": "rungs"},
        },
    ]
    sweep = shape_sweep(rows, [], dag_id="d", run_id="r", run_state="success")
    assert sweep["kind"] == "rungs"
    assert sweep["stage_columns"] == ["rung"]
    assert sweep["best"]["trial_id"] == trials[0]["trial_id"]
    assert sweep["best"]["rung"] == 1
    assert sweep["best"]["task"]["url"] == "/dags/d/runs/r/tasks/rung_2.train/mapped/0"
    assert [h["loss"] for h in sweep["best"]["rungs"]] == [1.0, 0.5]
    assert sweep["rows"][1]["task"]["task_id"] == "rung_1.train"
    assert sweep["tracking"] is None


def test_a_run_without_a_sweep_is_not_found():
    rows = [{"task_id": "t", "map_index": -1, "key": "return_value", "value": {"a": 1}}]
    assert shape_sweep(rows, [], dag_id="d", run_id="r") == {"dag_id": "d", "run_id": "r", "found": False}


def test_rank_records_and_chart_series_edge_cases():
    records = [
        {"trial_id": "b", "status": "success", "metrics": {"acc": 0.9}},
        {"trial_id": "a", "status": "success", "metrics": {"acc": 0.9}},
        {"trial_id": "c", "status": "success", "metrics": {"acc": "n/a"}},
        {"trial_id": "d", "status": "failed", "error": "x"},
    ]
    ranked = rank_records(records, "acc", "max")
    assert [(r["trial_id"], r["rank"]) for r in ranked] == [("a", 1), ("b", 2), ("c", None), ("d", None)]
    rows = [{"status": "success", "metric": 1.0, "params": {"k": "x", "c": 1}, "trial_id": "t", "best": True}]
    assert chart_series(rows, "m", ["k", "c"]) == []  # nothing varies


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (("", "d", "r", "t", -1), "/dags/d/runs/r/tasks/t"),
        (
            ("/af", "d/x", "manual__2024-01-01T00:00:00+00:00", "g.t", 3),
            "/af/dags/d%2Fx/runs/manual__2024-01-01T00%3A00%3A00%2B00%3A00/tasks/g.t/mapped/3",
        ),
    ],
)
def test_ti_url_quotes_each_part(args, url):
    assert ti_url(*args) == url


def test_page_renders_rows_charts_and_failures_escaped():
    """The HTML of the view (as the route renders it), with markup in a parameter and an error."""
    from airflow_mlops_provider.plugins.charts import scatter_svg
    from airflow_mlops_provider.plugins.render import page
    from airflow_mlops_provider.plugins.sweep_view import _shown

    trials, batches, rows, tis = _run()
    for row in rows:  # a parameter value that tries to break out of an attribute
        for record in row["value"] if isinstance(row["value"], list) else []:
            if isinstance(record, dict) and record.get("hparams", {}).get("optimizer") == "sgd":
                record["hparams"]["optimizer"] = '"><svg onload=alert(1)>'
    sweep = shape_sweep(rows, tis, dag_id="d", run_id="r", run_state="success", mlflow_ui={"url": "http://m"})
    sweep["run"] = {"state": "success"}
    charts = [
        {**c, "svg": scatter_svg(c["points"], x_label=c["param"], y_label="loss")} for c in sweep["charts"]
    ]
    html = page(
        "sweep.html", title="Sweep of d", active="", sweep=sweep, charts=charts, rows=_shown(sweep)
    ).body
    text = html.decode()
    # The one script is the app's own links.js (from base.html); nothing from the data.
    assert text.count("<script") == 1
    assert '<script src="/mlops/assets/links.js" defer></script>' in text
    assert "<svg onload" not in text
    assert "RuntimeError: &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<tr class=") == 6
    assert text.count('<tr class="best"') == 1
    assert text.count('target="_top" class="ti-link"') == 6 + 1 + 1  # rows, best card, failed trial
    assert text.count('<circle class="point') == 10
    assert f'id="best-trial">{sweep["best"]["trial_id"]}<' in text


def test_the_sweeps_own_selection_wins_over_other_tasks_leaderboards():
    """Regression: the example's `evaluate`/`summary` return trimmed leaderboards of the same length."""
    from airflow_mlops_provider.plugins.sweep_data import select_rank

    full = {"trial_id": "t1", "hparams": {}, "metrics": {"auc": 0.9}, "status": "success",
            "resources": {"memory": 1073741824}, "seconds": 2.2, "rank": 1}  # fmt: skip
    trimmed = {k: full[k] for k in ("trial_id", "hparams", "metrics", "status", "rank")}
    selects = [
        {"task_id": "evaluate", "leaderboard": [trimmed], "winner": "t1"},
        {
            "task_id": "select_best_trial",
            "leaderboard": [full],
            "best": full,
            "metric": "auc",
            "mode": "max",
            "n_trials": 1,
            "n_succeeded": 1,
            "n_failed": 0,
        },  # fmt: skip
        {"task_id": "summary", "leaderboard": [trimmed, trimmed]},
    ]
    assert max(selects, key=select_rank)["task_id"] == "select_best_trial"
