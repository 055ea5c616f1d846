"""Parameter sweeps on dynamic task mapping: search spaces, trials, batching and select-best.

See :mod:`airflow_mlops_provider.sweeps.space` for the search-space format and
:mod:`airflow_mlops_provider.sweeps.tasks` for the three-line DAG pattern.
"""

from __future__ import annotations

from airflow_mlops_provider.sweeps.batching import batch_trials, flatten_results, live_max_map_length
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
    "DISTRIBUTIONS",
    "MODES",
    "RESOURCES_KEY",
    "STRATEGIES",
    "Dimension",
    "batch_trials",
    "flatten_results",
    "live_max_map_length",
    "make_trial",
    "parse_search_space",
    "plan_sweep",
    "plan_trials",
    "run_trial",
    "run_trials",
    "select_best",
    "select_best_trial",
    "trial_id",
    "trial_task",
    "trials_from_grid",
    "trials_from_random",
]
