"""Scenario 4: Feast under overlap, and a materialization SIGKILLed mid-write, then retried.

The module builds one Feast repo (parquet offline source, the stack's Redis as online store,
file registry): 10 000 entities, two feature views of 30 000 rows. Its Airflow-free twin, the
*clean* project, is applied and materialized once through :class:`FeastHook` in this process
and checked against the values computed from the offline data. Every repetition then copies
the repo to a project of its own, reached through a ``feast`` connection (created through the
REST API) whose password is the Redis password, so the password only ever travels as a secret
Airflow masks.

- **overlap**: two runs of ``chaos_feast_overlap`` start at once on a never-applied repo: both
  ``feast apply`` it (``FeastApplyOperator``), then both materialize the same window.
- **kill**: a run of ``chaos_feast_kill`` writes in 500-row batches; once 15 to 85 % of one
  feature view's rows are online (``fv_0`` on even repetitions, ``fv_1`` on odd ones, after
  ``fv_0``'s interval is recorded) its task process is SIGKILLed; the retry must finish the job.

Afterwards every Redis hash of the case's project must equal the clean project's (byte for byte:
values and event times), and the registry must load, hold the clean registry's objects once each
and one recorded interval per materialization that completed. Counted in the ledger:
``duplicates`` (entities whose online row differs, plus registry problems), ``double_runs``
(intervals recorded beyond one per completed materialization) and, in the details, how far the
runs overlapped and where each kill landed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos import feast_checks as checks
from tests.chaos.conftest import repetitions
from tests.chaos.docker_faults import task_process
from tests.chaos.ledger import LEDGER
from tests.support.feast_repo import FEATURES, create_feature_repo, online_values

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.chaos.conftest import ChaosServices
    from tests.chaos.ledger import Row
    from tests.support.feast_repo import FeatureRepo

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

OVERLAP_DAG = "chaos_feast_overlap"
KILL_DAG = "chaos_feast_kill"
VIEWS = ["fv_0", "fv_1"]
ENTITIES = 10_000
ROWS = 60_000
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
END = datetime(2024, 1, 3, tzinfo=timezone.utc)
WINDOW = (START, END)
CONF_WINDOW = {"start": START.isoformat(), "end": END.isoformat()}
#: The share of one view's rows that must be online (and not yet all) when the kill lands.
KILL_BETWEEN = (0.15, 0.85)


@dataclass
class FeastEnv:
    chaos: ChaosServices
    root: Path
    clean: FeatureRepo
    redis: Any
    password: str
    snapshot: checks.Snapshot
    registry: dict[str, Any]
    names: dict[bytes, str]
    monkeypatch: pytest.MonkeyPatch
    #: Serialized entity keys with a row of each view (the write-progress sample).
    sample: dict[str, list[bytes]] = field(default_factory=dict)

    def new_case(self, kind: str, attempt: int) -> checks.FeastCase:
        """A copy of the repo with a project (so a Redis keyspace) and a connection of its own."""
        project = f"chaos_{kind}_{attempt}_{secrets.token_hex(4)}"
        repo = self.clean.copy_to(self.root / project)
        repo.project = project
        repo.yaml_path.write_text(
            self.clean.yaml_text.replace(f"project: {self.clean.project}\n", f"project: {project}\n")
        )
        conn_id = f"feast_{project}"
        status, body = self.chaos.stack.api.call(
            "POST",
            "/connections",
            {
                "connection_id": conn_id,
                "conn_type": "feast",
                "password": self.password,
                "extra": json.dumps({"repo_path": str(repo.path)}),
            },
        )
        assert status == 201, (status, body)
        self.monkeypatch.setenv(_conn(conn_id), repo.connection_json(password=self.password))
        return checks.FeastCase(repo, conn_id)

    def compare(self, case: checks.FeastCase, expected_intervals: dict[str, int], row: Row) -> None:
        """Count into ``row`` how the case's online store and registry differ from the clean run's."""
        differ, notes = checks.online_differences(
            self.snapshot, checks.online_snapshot(self.redis, case.project), self.names
        )
        registry = checks.check_registry(case, self.registry, WINDOW, expected_intervals)
        row.duplicates += differ + len(registry.problems)
        row.double_runs += registry.surplus
        row.details += [f"{case.project}: {n}" for n in notes] + registry.problems + registry.surplus_notes


def _conn(name: str) -> str:
    return f"AIRFLOW_CONN_{name.upper()}"


@pytest.fixture(scope="module")
def feast_env(chaos: ChaosServices) -> Iterator[FeastEnv]:
    import redis

    from airflow_mlops_provider.hooks.feast import FeastHook

    root = chaos.stack.home / "feast" / "overlap"
    password = chaos.secrets["Redis password"]
    clean = create_feature_repo(
        root / "clean",
        project=f"chaos_clean_{secrets.token_hex(4)}",
        n_views=len(VIEWS),
        rows=ROWS,
        n_entities=ENTITIES,
        start=START,
        end=END,
        online_store="redis",
        # No password here: the hook adds the connection's.
        redis_connection_string=chaos.redis_address,
    )
    host, port = chaos.redis_address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), password=password)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(_conn("feast_chaos_clean"), clean.connection_json(password=password))
        hook = FeastHook("feast_chaos_clean")
        hook.apply()
        hook.materialize(None, START, END, online_write_batch_size=2000)
        _check_clean(hook, clean)
        snapshot = checks.online_snapshot(client, clean.project)
        assert len(snapshot) >= ENTITIES * 0.95, len(snapshot)
        env = FeastEnv(
            chaos=chaos,
            root=root,
            clean=clean,
            redis=client,
            password=password,
            snapshot=snapshot,
            registry=checks.registry_objects(checks.read_registry(clean.registry_path), clean.project),
            names=checks.field_names(VIEWS, FEATURES),
            monkeypatch=mp,
        )
        for view in VIEWS:
            keys = sorted(k for k, fields in snapshot.items() if f"_ts:{view}".encode() in fields)
            env.sample[view] = keys[:: max(1, len(keys) // 400)]
        chaos.stack.serve(OVERLAP_DAG, KILL_DAG)
        yield env
    client.close()


def _check_clean(hook: Any, repo: FeatureRepo) -> None:
    """The clean run's online store holds, for every entity, the latest row of the offline data."""
    ids = list(range(1, repo.n_entities + 1))
    online = online_values(hook.store, repo, ids)
    wrong = 0
    for view in repo.feature_views:
        expected = repo.expected_latest(view, START, END)
        for feat in FEATURES:
            got = online[f"{view}:{feat}"]
            wrong += sum(1 for entity, value in zip(ids, got) if value != expected.get(entity, {}).get(feat))
    assert wrong == 0, f"the clean run's online store differs from the offline data in {wrong} values"


def _ti(chaos: ChaosServices, dag_id: str, run_id: str, task_id: str = "materialize") -> dict[str, Any]:
    return chaos.stack.task_instance(dag_id, run_id, task_id)


def _xcom(chaos: ChaosServices, dag_id: str, run_id: str) -> Any:
    status, body = chaos.stack.api.call(
        "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/materialize/xcomEntries/return_value"
    )
    chaos.responses.append((f"xcom {dag_id}/{run_id}/materialize", body))
    return body.get("value") if status == 200 and isinstance(body, dict) else None


def _when(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else float("nan")


def _write_span(ti: dict[str, Any], result: Any) -> tuple[float, float]:
    """When the task wrote (from its end and the seconds it reported per view)."""
    end = _when(ti.get("end_date"))
    seconds = sum(v["seconds"] for v in result.values()) if isinstance(result, dict) else 0.0
    return end - seconds, end


def _failures(
    chaos: ChaosServices, dag_id: str, run_id: str, tasks: tuple[str, ...], tries: int
) -> list[str]:
    """Tasks of the run that did not succeed, or needed other than ``tries`` tries."""
    notes = []
    for task in tasks:
        ti = _ti(chaos, dag_id, run_id, task)
        if ti.get("state") != "success" or ti.get("try_number") != tries:
            notes.append(
                f"{run_id}/{task}: {ti.get('state')} on try {ti.get('try_number')} (expected success on {tries})"
            )
    return notes


def test_two_runs_materialize_one_interval_at_once(feast_env: FeastEnv) -> None:
    env, chaos = feast_env, feast_env.chaos
    row = LEDGER.row("Feast: 2 runs apply + materialize one interval at once")
    failures: list[str] = []
    overlaps: list[float] = []
    for attempt in range(repetitions(2)):
        case = env.new_case("overlap", attempt)
        conf = {"conn": case.conn_id, **CONF_WINDOW}
        runs = [
            chaos.stack.trigger(OVERLAP_DAG, f"overlap_{attempt}_{i}_{time.time_ns()}", conf)
            for i in range(2)
        ]
        for run_id in runs:
            chaos.stack.wait_run(OVERLAP_DAG, run_id, timeout=400)
        row.repetitions += 1
        run_failures = [
            note
            for run_id in runs
            for note in _failures(chaos, OVERLAP_DAG, run_id, ("apply", "materialize"), 1)
        ]
        failures += run_failures
        row.details += run_failures
        tis = [_ti(chaos, OVERLAP_DAG, r) for r in runs]
        results = [_xcom(chaos, OVERLAP_DAG, r) for r in runs]
        spans = [_write_span(ti, result) for ti, result in zip(tis, results)]
        overlaps.append(min(e for _, e in spans) - max(s for s, _ in spans))
        # Each run that returned its result recorded one interval per feature view.
        done = sum(1 for result in results if isinstance(result, dict))
        env.compare(case, dict.fromkeys(VIEWS, done), row)
    row.details.append("online writes overlapped by " + ", ".join(f"{s:.1f} s" for s in overlaps))
    assert failures == [], failures
    assert (row.duplicates, row.double_runs) == (0, 0), row.details
    assert all(s > 0 for s in overlaps), f"the two runs' writes did not overlap: {overlaps}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _kill_inside_write(env: FeastEnv, case: checks.FeastCase, pid: int, view: str) -> tuple[bool, str]:
    """SIGKILL ``pid`` once ``view``'s write is under way; (killed, where it landed)."""
    sample = env.sample[view]
    low, high = KILL_BETWEEN
    deadline = time.monotonic() + 300
    progress = 0.0
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False, f"the task ended before {view}'s write was {low:.0%} done ({progress:.0%})"
        progress = checks.write_progress(env.redis, sample, case.project, view)
        if progress >= low:
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if not _alive(pid):
                    break
                time.sleep(0.05)
            after = checks.write_progress(env.redis, sample, case.project, view)
            where = "inside" if after < 1.0 else "after"
            if progress > high:
                where += f" (later than the planned {high:.0%})"
            return (
                True,
                f"killed {where} {view}'s write ({progress:.0%} online at the kill, {after:.0%} once dead)",
            )
        time.sleep(0.01)
    raise AssertionError(f"{case.project}: {view}'s write did not start within 300 s")


def test_materialize_sigkilled_mid_write_then_retried(feast_env: FeastEnv) -> None:
    from airflow_mlops_provider.hooks.feast import FeastHook

    env, chaos = feast_env, feast_env.chaos
    row = LEDGER.row("Feast: materialize SIGKILLed mid-write, retried")
    failures: list[str] = []
    for attempt in range(repetitions(2)):
        view = VIEWS[attempt % len(VIEWS)]
        case = env.new_case("kill", attempt)
        FeastHook(case.conn_id).apply()
        run_id = chaos.stack.trigger(
            KILL_DAG, f"kill_{attempt}_{time.time_ns()}", {"conn": case.conn_id, **CONF_WINDOW}
        )
        ti = chaos.stack.wait_ti(KILL_DAG, run_id, "materialize", {"running"}, timeout=300)
        pid = task_process(ti["id"])
        killed, where = _kill_inside_write(env, case, pid, view)
        recorded = {
            v: len(i) for v, i in checks.intervals(checks.read_registry(case.repo.registry_path)).items()
        }
        row.repetitions += 1
        row.kills += int(killed)
        row.details.append(f"{run_id}: {where}; intervals recorded by the killed try: {recorded}")
        chaos.stack.wait_run(KILL_DAG, run_id, timeout=400)
        failures += _failures(chaos, KILL_DAG, run_id, ("materialize",), 2 if killed else 1)
        result = _xcom(chaos, KILL_DAG, run_id)
        env.compare(case, {v: recorded.get(v, 0) + 1 for v in VIEWS}, row)
        if isinstance(result, dict):
            row.details.append(
                f"{run_id}: the retry wrote "
                + ", ".join(f"{v} {r['rows']} rows" for v, r in sorted(result.items()))
            )
    row.details += failures
    assert failures == [], failures
    assert (row.duplicates, row.double_runs) == (0, 0), row.details
    assert row.kills == row.repetitions, row.details
