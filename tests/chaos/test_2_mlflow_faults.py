"""Scenario 2: the MLflow registry under faults, under a real scheduler.

Each case is one run of ``chaos_mlflow`` (log a model, register it, alias it ``candidate``,
promote it to ``champion``) on a registered model of its own, with one fault of one kind
(``drop``: the server commits, the answer is lost; ``reset``; ``delay``: held past the tasks'
4 s client timeout, then committed; ``503``) on the first request of three of the writes the
operators make, one in each registry task. Two groups cover the six writes:

- **new model**: ``registered-models/create`` (register), the ``model-versions/set-tag`` of
  ``MlflowSetAliasOperator``'s record (candidate), ``registered-models/alias`` for ``champion``
  (promote);
- **seeded champion** (the test registers version 1 and points ``champion`` at it first, with a
  score below the challenger's for half the faults and above it for the others):
  ``model-versions/create`` (register), ``registered-models/alias`` for ``candidate``, the
  ``model-versions/set-tag`` of ``MlflowPromoteModelOperator``'s decision record (promote).

MLflow's client makes no retries of its own in these tasks (``client_retries`` 0), so every
fault reaches the operators; Airflow retries the tasks (3 retries, 2 s apart). The cases run at
once. After each run (and, for a delay, after the held requests committed) the registry is read
directly, past the proxy. Counted as ``duplicates``: versions of the ``register`` task instance
beyond one, plus alias moves that do not match the decision: an alias not where the decision
put it, a decision record on the version that differs from the decision, a move with no Asset
event or a wrong ``previous_version``, an event without a move. Every run must succeed.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos.conftest import repetitions
from tests.chaos.dags.chaos_mlflow import EXPERIMENT, REQUEST_TIMEOUT_S
from tests.chaos.fault_proxy import FAULTS
from tests.chaos.ledger import LEDGER
from tests.support.airflow_runs import xcom_value

if TYPE_CHECKING:
    from tests.chaos.conftest import ChaosServices
    from tests.chaos.fault_proxy import Rule

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

DAG = "chaos_mlflow"
#: A held request commits this long after it arrived: past the client's timeout, and inside the
#: one more timeout the register operator looks for it before creating again.
DELAY_S = REQUEST_TIMEOUT_S + 3
CHALLENGER_SCORE = 0.9
SEED_SCORES = {"worse": 0.5, "better": 0.95}


@dataclass(frozen=True)
class Write:
    label: str
    path: str
    #: What the request body holds besides the model's name (tells the write from its siblings).
    needles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    slug: str
    #: The champion the test seeds: None (no registered model), or one whose score is below
    #: the challenger's ("worse") or above it ("better"), alternating by fault and repetition.
    seeded: bool
    writes: tuple[Write, ...]


GROUPS = (
    Group("new", False, (
        Write("registered-model create", "registered-models/create"),
        Write("candidate alias record (tags)", "model-versions/set-tag", ("airflow.alias.candidate.ti_key",)),
        Write("champion alias set", "registered-models/alias", ('"champion"',)),
    )),
    Group("seeded", True, (
        Write("model-version create", "model-versions/create"),
        Write("candidate alias set", "registered-models/alias", ('"candidate"',)),
        Write("promotion decision record (tags)", "model-versions/set-tag", ("airflow.promotion.ti_key",)),
    )),
)  # fmt: skip


@dataclass
class Case:
    group: Group
    fault: str
    index: int
    model: str = ""
    run_id: str = ""
    seed: str | None = None
    rules: list[Rule] = field(default_factory=list)
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _client(chaos: ChaosServices) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(chaos.mlflow_url)


@pytest.fixture(scope="module")
def mlflow_stack(chaos: ChaosServices) -> ChaosServices:
    client = _client(chaos)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT)
    chaos.stack.serve(DAG)
    return chaos


def _seed(chaos: ChaosServices, case: Case) -> None:
    """The registered model, and version 1 (``score`` of the seed) holding ``champion``."""
    if case.seed is None:
        return
    client = _client(chaos)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    run = client.create_run(experiment.experiment_id, tags={"chaos.seed": case.model})
    client.log_metric(run.info.run_id, "score", SEED_SCORES[case.seed])
    client.set_terminated(run.info.run_id)
    client.create_registered_model(case.model)
    seeded = client.create_model_version(case.model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert seeded.version == "1", seeded
    client.set_registered_model_alias(case.model, "champion", "1")


def _events(chaos: ChaosServices, run_id: str) -> list[dict[str, Any]]:
    status, body = chaos.stack.api.call(
        "GET", f"/assets/events?source_dag_id={DAG}&source_run_id={run_id}&limit=100"
    )
    chaos.responses.append((f"asset events {run_id}", body))
    assert status == 200, body
    return list(body["asset_events"])


def _tries(chaos: ChaosServices, run_id: str) -> dict[str, int]:
    return {
        task: int(chaos.stack.task_instance(DAG, run_id, task)["try_number"])
        for task in ("log_model", "register", "candidate", "promote")
    }


def _check(chaos: ChaosServices, case: Case) -> None:
    """Count the case's versions and alias moves, in the registry and in the Asset events."""
    client = _client(chaos)
    name = case.model
    mine = [
        v
        for v in client.search_model_versions(f"name = '{name}'")
        if v.tags.get("airflow.task_id") == "register" and v.tags.get("airflow.run_id") == case.run_id
    ]
    if len(mine) != 1:
        case.duplicates += max(0, len(mine) - 1)
        case.problems.append(
            f"{len(mine)} versions of the register task instance: {[v.version for v in mine]}"
        )
    registered = xcom_value(chaos.stack.api, DAG, case.run_id, "register") or {}
    decided = xcom_value(chaos.stack.api, DAG, case.run_id, "promote") or {}
    chaos.responses.append((f"xcom {case.run_id}", [registered, decided]))
    version = str(registered.get("version"))
    seeded = "1" if case.seed else None
    expected = "keep" if case.seed == "better" else "promote"
    moves: list[str] = []  # alias moves that do not match the decision

    if decided.get("decision") != expected or str(decided.get("challenger_version")) != version:
        moves.append(f"promote returned {decided.get('decision')!r} for v{decided.get('challenger_version')}")
    if decided.get("champion_version") != seeded:
        moves.append(f"promote says the champion was {decided.get('champion_version')!r}, not {seeded!r}")
    aliases = client.get_registered_model(name).aliases
    champion = version if expected == "promote" else seeded
    if aliases.get("champion") != champion or aliases.get("candidate") != version:
        moves.append(f"aliases {aliases}, not champion={champion} candidate={version}")
    tags = client.get_model_version(name, version).tags
    record = (tags.get("airflow.promotion.decision"), tags.get("airflow.promotion.champion_version"))
    if record != (expected, seeded or ""):
        moves.append(f"decision record {record}, not {(expected, seeded or '')}")

    events = _events(chaos, case.run_id)
    promoted = {
        alias: [e["extra"] for e in events if e["extra"].get("event") == "promoted" and e["extra"].get("alias") == alias]
        for alias in ("candidate", "champion")
    }  # fmt: skip
    wanted = {
        "candidate": [(version, None)],
        "champion": [(version, seeded)] if expected == "promote" else [],
    }
    for alias, want in wanted.items():
        got = [(str(e.get("version")), e.get("previous_version")) for e in promoted[alias]]
        if got != want:
            moves.append(f"{alias} events (version, previous) {got}, not {want}")
    registered_events = [e["extra"] for e in events if e["extra"].get("event") == "registered"]
    if [(e.get("version"), e.get("created")) for e in registered_events] != [(version, True)]:
        case.notes.append(
            f"registered events {[(e.get('version'), e.get('created')) for e in registered_events]}"
        )
    case.duplicates += len(moves)
    case.problems.extend(moves)


def _run_case(chaos: ChaosServices, case: Case) -> Case:
    nonce = secrets.token_hex(3)
    case.model = f"chaos-{case.group.slug}-{case.fault}-{case.index}-{nonce}"
    case.run_id = f"{case.group.slug}_{case.fault}_{case.index}_{nonce}"
    flip = (case.index + FAULTS.index(case.fault)) % 2
    case.seed = ("worse", "better")[flip] if case.group.seeded else None
    _seed(chaos, case)
    for write in case.group.writes:
        body = (case.model, *write.needles)
        case.rules.append(
            chaos.proxy.inject(case.fault, method="POST", path=write.path, body=body, delay=DELAY_S)
        )
    started = time.monotonic()
    conf = {"model": case.model, "score": CHALLENGER_SCORE, "client_retries": 0}
    chaos.stack.trigger(DAG, case.run_id, conf)
    run = chaos.stack.wait_run(DAG, case.run_id, timeout=900)
    took = time.monotonic() - started
    if case.fault == "delay":
        time.sleep(DELAY_S + 2)  # whatever the proxy still holds commits before the count
    tries = _tries(chaos, case.run_id)
    retried = {task: n for task, n in tries.items() if n > 1}
    case.notes.append(
        f"seed {case.seed}: {run['state']} in {took:.0f} s" + (f", tries {retried}" if retried else "")
    )
    if run["state"] != "success":
        case.problems.append(f"run {run['state']} (tries {tries})")
    for write, rule in zip(case.group.writes, case.rules):
        if rule.times != 0:
            case.problems.append(f"the fault on the {write.label} was never applied (no matching request)")
    _check(chaos, case)
    return case


def test_registry_writes_under_faults(mlflow_stack: ChaosServices) -> None:
    chaos = mlflow_stack
    n = repetitions(1)
    cases = [Case(group, fault, index) for index in range(n) for group in GROUPS for fault in FAULTS]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        done = list(pool.map(lambda case: _run_case(chaos, case), cases))
    for case in done:
        row = LEDGER.row(f"MLflow registry writes: {case.fault}")
        row.repetitions += len(case.group.writes)
        row.kills += sum(rule.times == 0 for rule in case.rules)
        row.duplicates += case.duplicates
        labels = ", ".join(w.label for w in case.group.writes)
        row.details.append(f"{case.run_id} ({labels}): " + "; ".join(case.notes + case.problems))
    problems = [(case.run_id, case.problems) for case in done if case.problems]
    assert problems == [], problems
