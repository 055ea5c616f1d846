"""DAG ``Param`` helpers with JSON schemas, so the trigger form shows typed fields and rejects bad values.

Airflow validates a run's conf against these schemas when the run is triggered (the UI form,
the REST API and ``airflow dags trigger`` alike) and answers a violation with the schema's
message. ``sweep_params()`` returns the whole set that
:func:`airflow_mlops_provider.sweeps.plan_sweep` and ``select_best_trial`` read::

    @dag(params=sweep_params(search_space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}}))
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param

from airflow_mlops_provider.sweeps.adaptive import ADAPTIVE_STRATEGIES
from airflow_mlops_provider.sweeps.plan import CACHE_MODES, STRATEGIES
from airflow_mlops_provider.sweeps.schema import SEARCH_SPACE_SCHEMA
from airflow_mlops_provider.sweeps.select import MODES
from airflow_mlops_provider.sweeps.space import parse_search_space

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "RUNTIMES",
    "SEARCH_SPACE_SCHEMA",
    "cache_key_param",
    "cache_param",
    "gpus_per_trial_param",
    "max_parallel_tasks_param",
    "metric_param",
    "min_success_ratio_param",
    "mode_param",
    "n_trials_param",
    "rounds_param",
    "runtime_param",
    "search_space_param",
    "seed_param",
    "strategy_param",
    "sweep_params",
    "trials_per_round_param",
]

#: Where trials may run.
RUNTIMES = ("docker", "kubernetes", "local")
#: What the trigger form accepts as a metric name (JSON Schema's ``pattern`` is a ``re.search``).
_METRIC_PATTERN = r"^\S+$"


def search_space_param(
    default: Mapping[str, Any] | str,
    *,
    description: str = "Parameters to sweep: a list of values, or {distribution: int|float, low, "
    "high, log, step, num}, or {distribution: choice, values}, or a constant.",
    title: str = "Search space",
) -> Param:
    """
    Return a Param for a search space; the default is checked now with ``parse_search_space``.

    The Param's JSON schema is :data:`~airflow_mlops_provider.sweeps.schema.SEARCH_SPACE_SCHEMA`,
    the same rules ``parse_search_space`` applies when the sweep is planned.

    :param default: The default space (a mapping, or its JSON text).
    :param description: Help text shown under the field.
    :param title: The field's label.
    """
    parse_search_space(default)
    space = (
        json.loads(default) if isinstance(default, str) else dict(default)
    )  # parse_search_space takes JSON text too
    return Param(space, description=description, title=title, **copy.deepcopy(SEARCH_SPACE_SCHEMA))


def _int_param(
    name: str, default: int | None, minimum: int, maximum: int | None, title: str, description: str
) -> Param:
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    bounds = f"between {minimum} and {maximum}" if is_int(maximum) else f">= {minimum}"
    if default is not None and not is_int(default):
        raise ValueError(f"{name} must be an integer {bounds}, got {default!r}")
    if maximum is not None and not is_int(maximum):
        raise ValueError(f"{name} maximum must be an integer >= {minimum}, got {maximum!r}")
    if maximum is not None and maximum < minimum:
        raise ValueError(f"{name} maximum must be >= {minimum}, got {maximum!r}")
    schema: dict[str, Any] = {"type": "integer" if default is not None else ["integer", "null"]}
    schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    if default is not None and (default < minimum or (maximum is not None and default > maximum)):
        raise ValueError(f"{name} must be an integer {bounds}, got {default!r}")
    return Param(default, description=description, title=title, **schema)


def n_trials_param(default: int = 20, *, minimum: int = 1, maximum: int = 10_000) -> Param:
    """
    Return a Param for the number of trials of a random sweep.

    :param default: Default number of trials.
    :param minimum: Fewest trials accepted (>= 1).
    :param maximum: Most trials accepted.
    """
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ValueError(f"minimum must be an integer >= 1, got {minimum!r}")
    return _int_param(
        "n_trials", default, minimum, maximum, "Number of trials", "How many trials a random sweep draws."
    )


def seed_param(default: int = 0) -> Param:
    """Return a Param for the seed of a random sweep (an integer >= 0)."""
    return _int_param("seed", default, 0, None, "Seed", "The same seed draws the same trials.")


def max_parallel_tasks_param(default: int | None = None, *, maximum: int = 1024) -> Param:
    """Return a Param for the most mapped tasks a sweep may use (empty: up to max_map_length)."""
    return _int_param(
        "max_parallel_tasks",
        default,
        1,
        maximum,
        "Max parallel tasks",
        "Trials are packed into at most this many mapped tasks.",
    )


def gpus_per_trial_param(default: int = 0, *, maximum: int = 8) -> Param:
    """
    Return a Param for the GPUs each trial gets (an integer from 0 to ``maximum``).

    :param default: Default GPUs per trial.
    :param maximum: Most GPUs a trial may ask for.
    """
    return _int_param("gpus_per_trial", default, 0, maximum, "GPUs per trial", "GPUs given to each trial.")


def _enum_param(name: str, default: str, allowed: Sequence[str], title: str, description: str) -> Param:
    if default not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {default!r}")
    return Param(default, description=description, title=title, type="string", enum=list(allowed))


def runtime_param(default: str = "local", *, allowed: Sequence[str] = RUNTIMES) -> Param:
    """
    Return a Param choosing where trials run: ``docker``, ``kubernetes`` or ``local``.

    :param default: The default runtime.
    :param allowed: The runtimes offered (a subset of :data:`RUNTIMES`).
    """
    if isinstance(allowed, str) or not isinstance(allowed, Sequence):
        raise ValueError(f"allowed must be a non-empty subset of {list(RUNTIMES)}, got {allowed!r}")
    unknown = [name for name in allowed if name not in RUNTIMES]
    if unknown or not allowed:
        raise ValueError(f"allowed must be a non-empty subset of {list(RUNTIMES)}, got {list(allowed)!r}")
    return _enum_param("runtime", default, allowed, "Runtime", "Where each trial runs.")


def strategy_param(default: str = "random", *, adaptive: bool = False) -> Param:
    """
    Return a Param choosing how trials are drawn.

    :param default: The default strategy.
    :param adaptive: Offer the samplers of an adaptive sweep (``tpe``, ``cmaes``, ``qmc``,
        ``random``) instead of ``grid`` and ``random``.
    """
    if adaptive:
        return _enum_param(
            "strategy",
            default,
            ADAPTIVE_STRATEGIES,
            "Strategy",
            "tpe: Optuna's TPE learns from each round; cmaes: CMA-ES (int/float ranges); qmc: "
            "quasi-random cover of the space; random: uniform draws.",
        )
    return _enum_param(
        "strategy", default, STRATEGIES, "Strategy", "grid: every combination; random: n_trials draws."
    )


def rounds_param(default: int, *, maximum: int | None = None) -> Param:
    """
    Return a Param for the rounds of an adaptive sweep (1 to ``maximum``, the rounds the DAG builds).

    :param default: Default rounds.
    :param maximum: Most rounds the form accepts (default ``default``).
    """
    return _int_param(
        "rounds",
        default,
        1,
        default if maximum is None else maximum,
        "Rounds",
        "Rounds of the adaptive sweep; the sampler learns from each round before the next.",
    )


def trials_per_round_param(default: int, *, maximum: int | None = None) -> Param:
    """
    Return a Param for the trials of each round (1 to ``maximum``, the most the DAG builds).

    :param default: Default trials per round.
    :param maximum: Most trials per round the form accepts (default ``default``).
    """
    return _int_param(
        "trials_per_round",
        default,
        1,
        default if maximum is None else maximum,
        "Trials per round",
        "Trials asked of the sampler for each round (they run in parallel).",
    )


def mode_param(default: str = "min") -> Param:
    """Return a Param for the direction of the metric: ``min`` or ``max``."""
    return _enum_param(
        "mode", default, MODES, "Mode", "Whether the best trial has the lowest or highest metric."
    )


def metric_param(default: str = "loss") -> Param:
    """Return a Param for the metric that ranks trials (a non-empty name)."""
    if not isinstance(default, str) or not default.strip():
        raise ValueError(f"metric must be a non-empty string, got {default!r}")
    if not re.search(_METRIC_PATTERN, default):  # the form would refuse its own default
        raise ValueError(
            f"metric must be a name without whitespace (pattern {_METRIC_PATTERN}), got {default!r}"
        )
    return Param(
        default,
        description="The metric, reported by every trial, that ranks them.",
        title="Metric",
        type="string",
        minLength=1,
        pattern=_METRIC_PATTERN,
    )


def min_success_ratio_param(default: float = 0.5) -> Param:
    """Return a Param for the smallest share of trials that must succeed (0 to 1)."""
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not 0 <= default <= 1:
        raise ValueError(f"min_success_ratio must be a number between 0 and 1, got {default!r}")
    return Param(
        default,
        description="The sweep fails when a smaller share of its trials succeeded.",
        title="Min success ratio",
        type="number",
        minimum=0,
        maximum=1,
    )


def cache_param(default: str = "readwrite") -> Param:
    """Return a Param for the trial cache: ``off`` (run every trial), ``read`` or ``readwrite``."""
    return _enum_param(
        "cache",
        default,
        CACHE_MODES,
        "Trial cache",
        "readwrite: reuse trials MLflow already holds for the same parameters and cache key, and "
        "record new ones; read: reuse only; off: run every trial again.",
    )


def cache_key_param(default: str | None = None) -> Param:
    """
    Return a Param for the cache key: what a reused trial must share besides its parameters.

    Empty (None) means ``plan_sweep``'s default, ``{{ run_id }}`` (only a rerun of the same DAG
    run reuses trials). A template such as ``{{ data_interval_start }}-v3`` is rendered.
    """
    if default is not None and (not isinstance(default, str) or not default.strip()):
        raise ValueError(f"cache_key must be None or a non-empty string, got {default!r}")
    return Param(
        default,
        type=["null", "string"],
        minLength=1,
        title="Cache key",
        description="The data version, image digest or code version; a trial with the same parameters "
        "and key is reused. Empty: this DAG run only ({{ run_id }}).",
    )


def sweep_params(
    *,
    search_space: Mapping[str, Any],
    strategy: str | None = None,
    n_trials: int = 20,
    max_trials: int = 10_000,
    seed: int = 0,
    runtime: str = "local",
    gpus_per_trial: int = 0,
    max_gpus_per_trial: int = 8,
    metric: str = "loss",
    mode: str = "min",
    min_success_ratio: float = 0.5,
    max_parallel_tasks: int | None = None,
    cache: str = "readwrite",
    cache_key: str | None = None,
    rounds: int | None = None,
    trials_per_round: int | None = None,
) -> dict[str, Param]:
    """
    Return the DAG params of a sweep, keyed by the names ``plan_sweep``/``select_best_trial`` read.

    :param search_space: Default search space.
    :param strategy: ``"grid"`` or ``"random"`` (default); for an adaptive sweep ``"tpe"``
        (default), ``"cmaes"``, ``"qmc"`` or ``"random"``.
    :param n_trials: Default number of random trials.
    :param max_trials: Most trials the form accepts.
    :param seed: Default seed.
    :param runtime: Default runtime (``docker``, ``kubernetes`` or ``local``).
    :param gpus_per_trial: Default GPUs per trial.
    :param max_gpus_per_trial: Most GPUs per trial the form accepts.
    :param metric: Default metric.
    :param mode: Default mode.
    :param min_success_ratio: Default smallest share of successful trials.
    :param max_parallel_tasks: Default most mapped tasks (None: up to ``max_map_length``).
    :param cache: Default trial cache mode (``off``, ``read``, ``readwrite``); the form can turn
        it off for one run.
    :param cache_key: Default cache key (None: ``plan_sweep``'s ``{{ run_id }}``).
    :param rounds: For an adaptive sweep (``adaptive_sweep``): its rounds, the most the form
        accepts; also offers the samplers as ``strategy`` (``tpe``...).
    :param trials_per_round: For an adaptive sweep: its trials per round, the most the form accepts.
    """
    adaptive = rounds is not None or trials_per_round is not None
    if adaptive and (rounds is None or trials_per_round is None):
        raise ValueError(
            f"an adaptive sweep's params need both rounds and trials_per_round, got rounds={rounds!r}, "
            f"trials_per_round={trials_per_round!r}"
        )
    staged = {}
    if rounds is not None and trials_per_round is not None:
        staged = {
            "rounds": rounds_param(rounds),
            "trials_per_round": trials_per_round_param(trials_per_round),
        }
    return {
        "search_space": search_space_param(search_space),
        "strategy": strategy_param(strategy or ("tpe" if adaptive else "random"), adaptive=adaptive),
        **staged,
        "n_trials": n_trials_param(n_trials, maximum=max_trials),
        "seed": seed_param(seed),
        "runtime": runtime_param(runtime),
        "gpus_per_trial": gpus_per_trial_param(gpus_per_trial, maximum=max_gpus_per_trial),
        "metric": metric_param(metric),
        "mode": mode_param(mode),
        "min_success_ratio": min_success_ratio_param(min_success_ratio),
        "max_parallel_tasks": max_parallel_tasks_param(max_parallel_tasks),
        "cache": cache_param(cache),
        "cache_key": cache_key_param(cache_key),
    }
