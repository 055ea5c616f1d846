"""Parameter sweeps on dynamic task mapping: search spaces, trials, batching and select-best.

See :mod:`airflow_mlops_provider.sweeps.space` for the search-space format and
:mod:`airflow_mlops_provider.sweeps.tasks` for the three-line DAG pattern (Python trials),
:mod:`airflow_mlops_provider.sweeps.container` for container trials, and
:mod:`airflow_mlops_provider.sweeps.tracking` for MLflow tracking and the trial cache,
:mod:`airflow_mlops_provider.sweeps.rounds` for adaptive sweeps (Optuna's samplers, in rounds)
and :mod:`airflow_mlops_provider.sweeps.halving` for successive halving.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops_provider.sweeps.adaptive import ADAPTIVE_STRATEGIES, suggest_trials
from airflow_mlops_provider.sweeps.batching import batch_trials, flatten_results, live_max_map_length
from airflow_mlops_provider.sweeps.halving import Halving, halving, halving_sweep, promote
from airflow_mlops_provider.sweeps.plan import CACHE_MODES, TRACKING_MODES
from airflow_mlops_provider.sweeps.records import TrialFailure, TrialResultError, split_result
from airflow_mlops_provider.sweeps.rounds import adaptive_sweep
from airflow_mlops_provider.sweeps.select import MODES, run_trial, run_trials, select_best
from airflow_mlops_provider.sweeps.space import (
    DISTRIBUTIONS,
    RESOURCES_KEY,
    Dimension,
    make_trial,
    parse_search_space,
    trial_id,
    trials_from_grid,
    trials_from_random,
)
from airflow_mlops_provider.sweeps.tasks import (
    STRATEGIES,
    plan_sweep,
    plan_trials,
    select_best_trial,
    trial_task,
)

__all__ = [
    "ADAPTIVE_STRATEGIES",
    "CACHE_MODES",
    "DISTRIBUTIONS",
    "MODES",
    "RESOURCES_KEY",
    "STRATEGIES",
    "TRACKING_MODES",
    "ContainerTrialOperator",
    "Dimension",
    "Halving",
    "TrialFailure",
    "TrialResultError",
    "adaptive_sweep",
    "batch_trials",
    "container_trials",
    "flatten_results",
    "halving",
    "halving_sweep",
    "live_max_map_length",
    "make_trial",
    "parse_search_space",
    "plan_sweep",
    "plan_trials",
    "promote",
    "run_trial",
    "run_trials",
    "select_best",
    "select_best_trial",
    "split_result",
    "suggest_trials",
    "trial_id",
    "trial_task",
    "trials_from_grid",
    "trials_from_random",
]


def __getattr__(name: str) -> Any:
    # The container trial operator imports the runtime operators: load it only when asked for.
    if name in ("ContainerTrialOperator", "container_trials"):
        from airflow_mlops_provider.sweeps import container

        return getattr(container, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
