"""Bad static arguments of adaptive and halving sweeps fail the DAG file's import, as Airflow parses it.

Each case is one DAG file in a fresh DAGs folder; one ``airflow dags list-import-errors --local``
parses them all and reports each file's error, which must be the ``ValueError`` naming the value.
A good DAG file beside them parses cleanly. (Bad values that come from the trigger form or conf
are checked at run time: ``test_adaptive_scheduled.py``.)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.conftest import airflow_env, run_airflow

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

DAG_FILE = """
import math

import pendulum
from airflow.sdk import dag

from airflow_mlops_provider.params import sweep_params
from airflow_mlops_provider.sweeps import adaptive_sweep, halving, halving_sweep, trial_task

SPACE = {{"x": {{"distribution": "float", "low": 0.0, "high": 1.0}}, "y": {{"distribution": "int", "low": 0, "high": 10}}}}
CHOICES = {{"opt": ["a", "b", "c"], "k": [1, 2]}}


@trial_task
def train(x: float = 0.0, y: int = 0, budget: float | None = None, **_) -> dict:
    return {{"loss": x}}


@dag(
    dag_id="bad_input_{name}",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    params={params},
)
def sweep():
    {body}


sweep()
"""

ADAPTIVE = "adaptive_sweep(train, rounds=2, trials_per_round=3{extra})"
FORM = "sweep_params(search_space=SPACE, strategy='tpe', rounds=2, trials_per_round=3)"
HALVING = "sweep_params(search_space=SPACE, n_trials=9)"

#: name -> (params, the sweep, the message the import fails with)
CASES = {
    "unknown-strategy": (
        "{}",
        ADAPTIVE.format(extra=", strategy='bogus', search_space=SPACE"),
        "ValueError: strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'bogus'",
    ),
    "unknown-strategy-space-from-params": (
        FORM,
        ADAPTIVE.format(extra=", strategy='hyperband'"),
        "ValueError: strategy must be one of ['tpe', 'cmaes', 'qmc', 'random'], got 'hyperband'",
    ),
    "grid-has-no-rounds": (
        "{}",
        ADAPTIVE.format(extra=", strategy='grid', search_space=SPACE"),
        "got 'grid' (grid has no rounds: use plan_sweep)",
    ),
    "zero-rounds": (
        "{}",
        "adaptive_sweep(train, rounds=0, trials_per_round=3, search_space=SPACE)",
        "ValueError: rounds must be an integer from 1 to 100, got 0",
    ),
    "too-many-rounds": (
        "{}",
        "adaptive_sweep(train, rounds=101, trials_per_round=3, search_space=SPACE)",
        "ValueError: rounds must be an integer from 1 to 100, got 101",
    ),
    "zero-trials-per-round": (
        "{}",
        "adaptive_sweep(train, rounds=2, trials_per_round=0, search_space=SPACE)",
        "ValueError: trials_per_round must be an integer from 1 to 10000, got 0",
    ),
    "fractional-trials-per-round": (
        "{}",
        "adaptive_sweep(train, rounds=2, trials_per_round=2.5, search_space=SPACE)",
        "ValueError: trials_per_round must be an integer from 1 to 10000, got 2.5",
    ),
    "form-rounds-over-built": (
        "sweep_params(search_space=SPACE, strategy='tpe', rounds=5, trials_per_round=3)",
        ADAPTIVE.format(extra=""),
        "ValueError: the DAG param 'rounds' has default 5, more than the 2 this DAG builds; "
        "raise the sweep's rounds or lower the param's",
    ),
    "form-trials-per-round-over-built": (
        "sweep_params(search_space=SPACE, strategy='tpe', rounds=2, trials_per_round=8)",
        ADAPTIVE.format(extra=""),
        "ValueError: the DAG param 'trials_per_round' has default 8, more than the 3 this DAG builds",
    ),
    "cmaes-only-choices": (
        "{}",
        ADAPTIVE.format(extra=", strategy='cmaes', search_space=CHOICES"),
        "ValueError: strategy 'cmaes' samples int and float ranges only, and search_space has only "
        "choices ['opt', 'k']; use strategy='tpe' (or 'random') for this space",
    ),
    "qmc-only-choices": (
        "{}",
        ADAPTIVE.format(extra=", strategy='qmc', search_space=CHOICES"),
        "ValueError: strategy 'qmc' samples int and float ranges only, and search_space has only choices",
    ),
    "eta-below-2": (
        HALVING,
        "halving_sweep(train, halving(min_budget=1, max_budget=9, eta=1), n_trials=9)",
        "ValueError: eta must be a number >= 2, got 1",
    ),
    "eta-not-a-number": (
        HALVING,
        "halving_sweep(train, halving(min_budget=1, max_budget=9, eta='3'), n_trials=9)",
        "ValueError: eta must be a number >= 2, got '3'",
    ),
    "min-budget-equals-max": (
        HALVING,
        "halving_sweep(train, halving(min_budget=9, max_budget=9), n_trials=9)",
        "ValueError: min_budget must be less than max_budget, got min_budget=9, max_budget=9",
    ),
    "min-budget-over-max": (
        HALVING,
        "halving_sweep(train, halving(min_budget=10, max_budget=2.5, eta=2), n_trials=9)",
        "ValueError: min_budget must be less than max_budget, got min_budget=10, max_budget=2.5",
    ),
    "zero-budget": (
        HALVING,
        "halving_sweep(train, halving(min_budget=0, max_budget=9), n_trials=9)",
        "ValueError: min_budget must be a positive number, got 0",
    ),
    "negative-budget": (
        HALVING,
        "halving_sweep(train, halving(min_budget=1, max_budget=-9), n_trials=9)",
        "ValueError: max_budget must be a positive number, got -9",
    ),
    "budget-as-text": (
        HALVING,
        "halving_sweep(train, halving(min_budget='1', max_budget=9), n_trials=9)",
        "ValueError: min_budget must be a positive number, got '1'",
    ),
    "budget-bool": (
        HALVING,
        "halving_sweep(train, halving(min_budget=True, max_budget=9), n_trials=9)",
        "ValueError: min_budget must be a positive number, got True",
    ),
    "budget-not-finite": (
        HALVING,
        "halving_sweep(train, halving(min_budget=1, max_budget=math.inf), n_trials=9)",
        "ValueError: max_budget must be a positive number, got inf",
    ),
    "no-room-for-a-promotion": (
        HALVING,
        "halving_sweep(train, halving(min_budget=1, max_budget=2, eta=3), n_trials=9)",
        "ValueError: max_budget must be at least min_budget * eta = 3 for one promotion, got max_budget=2",
    ),
    "halving-with-a-sampler": (
        HALVING,
        "halving_sweep(train, halving(1, 9), n_trials=9, strategy='tpe')",
        "ValueError: the first rung draws its trials with 'random' or 'grid', got strategy='tpe'",
    ),
    "halving-zero-trials": (
        HALVING,
        "halving_sweep(train, halving(1, 9), n_trials=0)",
        "ValueError: n_trials must be an integer >= 1, got 0",
    ),
}

GOOD = (
    FORM,
    ADAPTIVE.format(extra="")
    + "\n    halving_sweep(train, halving(min_budget=1, max_budget=9), n_trials=9, group_id='halving')",
)


def _write(folder: Path, name: str, params: str, body: str) -> Path:
    path = folder / f"bad_input_{name.replace('-', '_')}.py"
    path.write_text(DAG_FILE.format(name=name.replace("-", "_"), params=params, body=body))
    return path


@pytest.fixture(scope="module")
def import_errors(airflow_db, tmp_path_factory) -> dict[str, str]:
    """Parse every case's DAG file (and a good one) with Airflow; return each file's import error."""
    folder = tmp_path_factory.mktemp("bad-input-dags")
    for name, (params, body, _) in CASES.items():
        _write(folder, name, params, body)
    _write(folder, "good", *GOOD)
    proc = run_airflow(
        "dags",
        "list-import-errors",
        "--local",
        "-o",
        "json",
        env=airflow_env(AIRFLOW__CORE__DAGS_FOLDER=str(folder)),
        check=False,  # it exits 1 when there is an import error
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    start = proc.stdout.find("[")
    while not proc.stdout[start:].startswith(("[{", "[]")):
        start = proc.stdout.find("[", start + 1)
    rows, _ = json.JSONDecoder().raw_decode(proc.stdout[start:])
    return {row["filepath"].rsplit("/", 1)[-1]: row["error"] for row in rows}


def test_only_the_bad_dag_files_fail_to_import(import_errors):
    assert sorted(import_errors) == sorted(f"bad_input_{n.replace('-', '_')}.py" for n in CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_static_argument_fails_the_import_with_its_message(import_errors, case):
    error = import_errors[f"bad_input_{case.replace('-', '_')}.py"]
    assert CASES[case][2] in error, error
