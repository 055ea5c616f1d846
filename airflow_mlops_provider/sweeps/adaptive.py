"""Ask an Optuna sampler for the next round of trials, rebuilt from the results a DAG run holds.

An adaptive sweep runs in rounds. Before each round, :func:`suggest_trials` builds a fresh
in-memory Optuna study with the seeded sampler and *replays* the earlier rounds: it asks as many
trials as each round asked, checks they are the trials that round ran, and tells the sampler
their results (a failed trial as failed; a cached one as finished). Then it asks the next round.
The same seed and the same results give the same trials, so a retried or cleared round asks for
the trials it asked before, and no study database has to outlive the DAG run. When a replay
does not give back the recorded trials (the space or the Optuna version changed between rounds),
the study is rebuilt from the told trials instead (``add_trial``) and a warning says so.

The search-space format is the one the trigger form validates
(:mod:`airflow_mlops_provider.sweeps.space`); it maps onto Optuna's distributions:

- ``int`` ranges onto ``IntDistribution(low, high, step, log)``;
- ``float`` ranges onto ``FloatDistribution(low, high, step, log)`` (``num`` is for grids only);
- choices onto ``CategoricalDistribution`` (a value that is not a string, number, bool or null
  travels as its JSON text), and the ``resources`` entry too, so it stays a per-trial choice;
- constants are passed to every trial and not shown to the sampler.

Optuna is imported only inside these functions: the parse-time rule holds.
"""

from __future__ import annotations

import json
import logging
import warnings
import zlib
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.sweeps.space import (
    RESOURCES_KEY,
    Dimension,
    _canonical,
    _default_resources,
    make_trial,
    parse_search_space,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "ADAPTIVE_STRATEGIES",
    "check_strategy_space",
    "optuna_distributions",
    "suggest_trials",
]

log = logging.getLogger(__name__)

#: The samplers an adaptive sweep may use (``random`` is Optuna's, a baseline for comparisons).
ADAPTIVE_STRATEGIES = ("tpe", "cmaes", "qmc", "random")
#: Samplers that model only numeric (int/float) dimensions; choices go to a random sampler.
_NUMERIC_ONLY = ("cmaes", "qmc")
_PRIMITIVE = (str, int, float, bool, type(None))
#: Asks spent per wanted trial before giving up on finding new (distinct) points.
_ASKS_PER_TRIAL = 20


def _choices(dim: Dimension) -> tuple[list[Any], bool]:
    """The choices Optuna sees, and whether they are JSON texts standing for the real values."""
    values = list(dim.values)
    if all(isinstance(v, _PRIMITIVE) for v in values):
        return values, False
    return [_canonical(v) for v in values], True


def _numeric(dim: Dimension) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if dim.distribution == "int":
        step = 1 if dim.log else int(dim.step or 1)
        high = int(dim.low) + (int(dim.high) - int(dim.low)) // step * step
        return IntDistribution(int(dim.low), high, log=dim.log, step=step)
    if dim.step is not None:
        count = int((dim.high - dim.low) / dim.step + 1e-9)
        return FloatDistribution(float(dim.low), float(dim.low + count * dim.step), step=float(dim.step))
    return FloatDistribution(float(dim.low), float(dim.high), log=dim.log)


def optuna_distributions(
    search_space: Mapping[str, Any] | str,
) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """
    Map a search space onto Optuna distributions.

    :param search_space: The space (mapping or JSON text).
    :return: ``(distributions, constants, encoded)``: the distributions by name, the constant
        entries (not sampled), and the names whose choices are JSON texts.
    :raises ValueError: on a space the form would refuse, or that Optuna cannot take.
    """
    from optuna.distributions import CategoricalDistribution

    distributions: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    encoded: set[str] = set()
    for dim in parse_search_space(search_space):
        if dim.distribution == "choice" and len(dim.values) == 1:
            constants[dim.name] = dim.values[0]
        elif dim.distribution == "choice":
            choices, is_json = _choices(dim)
            distributions[dim.name] = CategoricalDistribution(choices)
            if is_json:
                encoded.add(dim.name)
        else:
            distributions[dim.name] = _numeric(dim)
    return distributions, constants, encoded


def _check_strategy(strategy: Any) -> str:
    if strategy not in ADAPTIVE_STRATEGIES:
        hint = " (grid has no rounds: use plan_sweep)" if strategy == "grid" else ""
        raise ValueError(f"strategy must be one of {list(ADAPTIVE_STRATEGIES)}, got {strategy!r}{hint}")
    return str(strategy)


def check_strategy_space(search_space: Mapping[str, Any] | str, strategy: Any) -> list[Dimension]:
    """
    Check, without importing Optuna (parse time), that ``strategy``'s sampler can search ``search_space``.

    CMA-ES and QMC model int and float ranges only: a space without one is refused (its choices
    would all be drawn at random), and a space with choices is accepted with a note in the log.
    Optuna cannot take a log range with a step either.

    :return: The space's dimensions.
    :raises ValueError: naming the strategy and the space's entries.
    """
    _check_strategy(strategy)
    dims = parse_search_space(search_space)
    searched = [d for d in dims if not (d.distribution == "choice" and len(d.values) == 1)]
    if not searched:
        raise ValueError(
            f"search_space has nothing to search: every entry is a constant {[d.name for d in dims]}; "
            "give a range or a choice of two or more values"
        )
    for dim in searched:
        if dim.distribution != "choice" and dim.log and dim.step not in (None, 1):
            raise ValueError(
                f"search_space[{dim.name!r}]: Optuna cannot sample a log range with a step, got "
                f"log=True, step={dim.step!r}; drop one of them"
            )
    if strategy in _NUMERIC_ONLY:
        numeric = [d.name for d in searched if d.distribution != "choice"]
        choices = [d.name for d in searched if d.distribution == "choice"]
        if not numeric:
            raise ValueError(
                f"strategy {strategy!r} samples int and float ranges only, and search_space has only "
                f"choices {choices}; use strategy='tpe' (or 'random') for this space"
            )
        if choices:
            log.info(
                "strategy %r: the choices %s are drawn at random (it models ranges only)", strategy, choices
            )
    return dims


def round_seed(seed: int) -> int:
    """The sampler's seed: the sweep's seed (a 32-bit value Optuna and NumPy accept)."""
    return zlib.crc32(f"mlops-sweep-{seed}".encode()) & 0x7FFFFFFF


def _sampler(strategy: str, seed: int, trials_per_round: int, n_choices: int) -> Any:
    import optuna

    seed = round_seed(seed)
    if strategy == "tpe":
        # Model from the second round on, once half of the first round's trials succeeded (Optuna
        # counts finished trials only); constant_liar spreads the trials asked in one batch.
        startup = min(10, max(1, trials_per_round // 2))
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=startup
        )
    if strategy == "cmaes":
        # One generation per round: CMA-ES updates its distribution once per population.
        return optuna.samplers.CmaEsSampler(
            seed=seed, popsize=max(trials_per_round, 2), warn_independent_sampling=False
        )
    if strategy == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def _new_study(strategy: str, seed: int, trials_per_round: int, mode: str, n_choices: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        direction="minimize" if mode == "min" else "maximize",
        sampler=_sampler(strategy, seed, trials_per_round, n_choices),
    )


class _Space:
    """The space as Optuna sees it, and the way back from Optuna's params to a trial."""

    def __init__(self, search_space: Mapping[str, Any] | str, resources: Mapping[str, Any] | None) -> None:
        self.dims = parse_search_space(search_space)
        self.distributions, self.constants, self.encoded = optuna_distributions(search_space)
        self.default_resources = _default_resources(resources)

    def trial(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self.constants)
        for name, value in params.items():
            values[name] = json.loads(value) if name in self.encoded else value
        hparams = {d.name: values[d.name] for d in self.dims if d.name != RESOURCES_KEY}
        resources = self.default_resources
        if RESOURCES_KEY in values:
            resources = {**(self.default_resources or {}), **values[RESOURCES_KEY]}
        return make_trial(hparams, resources)

    def params_of(self, trial: Mapping[str, Any]) -> dict[str, Any] | None:
        """Optuna params of a recorded trial, or None when it does not fit this space."""
        hparams = dict(trial.get("hparams") or {})
        params: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if name == RESOURCES_KEY:
                used = dict(trial.get("resources") or {})
                value = next(
                    (c for c in dist.choices if {**(self.default_resources or {}), **json.loads(c)} == used),
                    None,
                )
            else:
                value = hparams.get(name)
                if name in self.encoded:
                    value = _canonical(value)
            if value is None or not _contains(dist, value):
                return None
            params[name] = value
        return params


def _contains(dist: Any, value: Any) -> bool:
    choices = getattr(dist, "choices", None)
    if choices is not None:
        return value in choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return bool(dist.low <= value <= dist.high)


def _value(record: Mapping[str, Any] | None, metric: str) -> float | None:
    if not record or record.get("status") != "success":
        return None
    value = (record.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _ask_round(
    study: Any, space: _Space, n: int, known: dict[str, float | None], metric: str
) -> list[dict[str, Any]]:
    """Ask ``n`` distinct new trials; points already tried are told their known result and asked again."""
    import optuna
    from optuna.trial import TrialState

    trials: list[dict[str, Any]] = []
    seen = set(known)
    sampler = study.sampler
    try:
        for attempt in range(2 * _ASKS_PER_TRIAL * n):
            if len(trials) == n:
                break
            if attempt == _ASKS_PER_TRIAL * n:
                # The sampler keeps proposing points already tried (CMA-ES converges on a small
                # discrete space): fill the round with random draws, seeded by the study's length
                # so that a replay draws them again.
                study.sampler = optuna.samplers.RandomSampler(seed=len(study.trials))
            asked = study.ask(space.distributions)
            trial = space.trial(asked.params)
            trial_id = trial["trial_id"]
            if trial_id in known:
                value = known[trial_id]
                study.tell(asked, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
            elif trial_id in seen:
                study.tell(asked, state=TrialState.FAIL)  # the same point twice in one round
            else:
                seen.add(trial_id)
                trials.append({"trial": trial, "optuna": asked})
    finally:
        study.sampler = sampler
    return trials


def _replay(
    study: Any, space: _Space, history: Sequence[Sequence[Mapping[str, Any]]], metric: str, mode: str
):
    """Replay the earlier rounds into ``study``; return the known results, or None when a round diverged."""
    from optuna.trial import TrialState

    known: dict[str, float | None] = {}
    for index, round_records in enumerate(history):
        asked = _ask_round(study, space, len(round_records), known, metric)
        ids = [a["trial"]["trial_id"] for a in asked]
        recorded = [str(r.get("trial_id")) for r in round_records]
        if ids != recorded:
            log.warning(
                "Replaying round %d gave other trials than it ran (%s... vs %s...): the space, the seed "
                "or the Optuna version changed; the sampler is rebuilt from the told results instead",
                index + 1,
                ids[:2],
                recorded[:2],
            )
            return None
        for item, record in zip(asked, round_records):
            value = _value(record, metric)
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
            study.tell(item["optuna"], value, state=state)
            known[item["trial"]["trial_id"]] = value
    return known


def _told_trials(study: Any, space: _Space, history: Sequence[Sequence[Mapping[str, Any]]], metric: str):
    """Add the earlier rounds' results to ``study`` as finished trials; return the known results."""
    import optuna
    from optuna.trial import TrialState

    known: dict[str, float | None] = {}
    for round_records in history:
        for record in round_records:
            params = space.params_of(record)
            value = _value(record, metric)
            known[str(record.get("trial_id"))] = value
            if params is None:
                log.warning("Trial %s does not fit the search space: not told", record.get("trial_id"))
                continue
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=space.distributions,
                    value=value,
                    state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                )
            )
    return known


def suggest_trials(
    search_space: Mapping[str, Any] | str,
    n: int,
    *,
    strategy: str = "tpe",
    seed: int = 0,
    metric: str,
    mode: str = "min",
    history: Sequence[Sequence[Mapping[str, Any]]] = (),
    trials_per_round: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Return the next round's ``n`` trials, given every earlier round's records in the order asked.

    Each trial is ``{"trial_id", "hparams"[, "resources"], "round"}`` with ``round`` the 0-based
    round (``len(history)``). The trials are distinct and new: a point the sampler proposes
    again is told its known result and the sampler asked once more.

    :param search_space: The space (mapping or JSON text), as the trigger form validates it.
    :param n: How many trials to ask (>= 1).
    :param strategy: ``"tpe"``, ``"cmaes"``, ``"qmc"`` or ``"random"``.
    :param seed: The sweep's seed: the same seed and history give the same trials.
    :param metric: The metric each successful record reports.
    :param mode: ``"min"`` or ``"max"``.
    :param history: For each earlier round, its trial records (``trial_id``, ``hparams``,
        ``resources``, ``status``, ``metrics``) in the order that round asked for them.
    :param trials_per_round: The round size (CMA-ES's population); default ``n``.
    :param resources: Resources for every trial (a ``resources`` entry in the space overrides).
    :raises ValueError: on a bad strategy, space, ``n`` or ``mode``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    check_strategy_space(search_space, strategy)
    space = _Space(search_space, resources)
    size = trials_per_round or n
    n_choices = len(space.distributions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for multivariate TPE, etc.
        study = _new_study(strategy, seed, size, mode, n_choices)
        known = _replay(study, space, history, metric, mode)
        if known is None:
            study = _new_study(strategy, seed, size, mode, n_choices)
            known = _told_trials(study, space, history, metric)
        asked = _ask_round(study, space, n, known, metric)
    if len(asked) < n:
        raise ValueError(
            f"the sampler found only {len(asked)} new distinct trials of the {n} asked for round "
            f"{len(history) + 1} (the space may be nearly exhausted); lower trials_per_round or widen the space"
        )
    return [{**item["trial"], "round": len(history)} for item in asked]
