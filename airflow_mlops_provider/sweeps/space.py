"""Search spaces as JSON-able data, and the trials they produce (grid or seeded random).

A search space is a mapping from parameter name to one of:

- a list: the values to try (a *choice*), e.g. ``"optimizer": ["adam", "sgd"]``;
- a dict with a ``distribution``:

  - ``{"distribution": "choice", "values": [...]}``;
  - ``{"distribution": "int", "low": 2, "high": 8, "step": 2, "log": false, "num": 4}``;
  - ``{"distribution": "float", "low": 1e-4, "high": 1e-1, "log": true, "num": 4}``;

  (``distribution`` may be left out: ``values`` means choice, integer bounds mean int,
  other bounds mean float);
- any other JSON value: a constant, passed to every trial.

Ranges include both ends. In a grid, an int range yields every ``step``-th integer (or ``num``
points), a float range yields ``num`` points (or every ``step``), spaced evenly or, with
``log``, geometrically. Random sampling draws uniformly (log-uniformly with ``log``).

The reserved name ``resources`` is not a parameter: its value (a dict accepted by
:meth:`airflow_mlops_provider.compute.Resources.from_dict`, or a list of them to try) goes to
the trial's ``resources`` key, so different trials can ask for different GPUs.

A trial is ``{"trial_id": ..., "hparams": {...}}`` (plus ``"resources": {...}`` when set), which
feeds ``.expand_kwargs()`` as is. The id is a hash of the canonical JSON of the parameters
and resources, so the same parameters always get the same id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
from collections.abc import Mapping
from typing import Any

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.sweeps.schema import DISTRIBUTIONS, RESOURCES_KEY, check_search_space

__all__ = [
    "DISTRIBUTIONS",
    "RESOURCES_KEY",
    "Dimension",
    "make_trial",
    "parse_search_space",
    "trial_id",
    "trials_from_grid",
    "trials_from_random",
]

#: A grid larger than this is refused unless the caller raises ``max_trials``.
DEFAULT_MAX_TRIALS = 100_000

_DIGITS = 12  # floats are rounded to 12 significant digits so ids do not depend on FP noise


@dataclasses.dataclass(frozen=True)
class Dimension:
    """
    One validated search-space entry.

    :param name: The parameter name.
    :param distribution: ``"choice"``, ``"int"`` or ``"float"``.
    :param values: The values of a choice (a constant is a one-value choice).
    :param low: Lower bound of a range (inclusive).
    :param high: Upper bound of a range (inclusive).
    :param step: Spacing of a range, if any.
    :param num: Number of grid points of a range, if any.
    :param log: Whether a range is sampled and spaced on a log scale.
    """

    name: str
    distribution: str
    values: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    num: int | None = None
    log: bool = False

    @property
    def size(self) -> int | None:
        """Number of distinct values, or None for a continuous range."""
        if self.distribution == "choice":
            return len(self.values)
        if self.distribution == "int" and not self.log:
            return int((self.high - self.low) // (self.step or 1)) + 1
        if self.distribution == "int":
            return int(self.high - self.low) + 1
        return None

    def grid_bound(self) -> int:
        """
        At most how many values this dimension gives a grid, computed without listing them.

        Exact, except for an int range with ``num`` (``num``: rounding may merge points).
        """
        if self.distribution == "choice":
            return len(self.values)
        if self.num is not None:
            return self.num
        if self.distribution == "int":
            return len(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return 1  # not a grid axis: grid_values says so
        return self._float_steps(self.step)

    def _float_steps(self, step: float) -> int:
        return int(math.floor((self.high - self.low) / step + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Return the values this dimension contributes to a grid."""
        if self.distribution == "choice":
            return list(self.values)
        if self.num is not None:
            points = _spaced(self.low, self.high, self.num, self.log)
            if self.distribution == "int":
                return sorted({int(round(p)) for p in points})
            return list(dict.fromkeys(_round(p) for p in points))  # low == high: one point, not num
        if self.distribution == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError(
                f"search_space[{self.name!r}]: a float range needs 'num' (or 'step') to be used "
                f"in a grid, got low={self.low!r}, high={self.high!r}"
            )
        stepped = (_round(self.low + i * self.step) for i in range(self._float_steps(self.step)))
        return list(dict.fromkeys(stepped))  # a step below the 12 rounded digits repeats points

    def sample(self, rng: random.Random) -> Any:
        """Draw one value; only ``rng.random()`` is used, so draws are stable across versions."""
        u = rng.random()
        if self.distribution == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.distribution == "int":
            if self.log:
                lo, hi = math.log(self.low), math.log(self.high + 1)
                return min(int(math.exp(lo + u * (hi - lo))), int(self.high))
            step = int(self.step or 1)
            count = int(self.high - self.low) // step + 1
            return int(self.low) + min(int(u * count), count - 1) * step
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            value = math.exp(lo + u * (hi - lo))
        else:
            value = self.low + u * (self.high - self.low)
        if self.step is not None:
            value = self.low + round((value - self.low) / self.step) * self.step
        return _round(min(max(value, self.low), self.high))


def _round(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


def _spaced(low: float, high: float, num: int, log: bool) -> list[float]:
    if num == 1:
        return [low]
    if log:
        lo, hi = math.log(low), math.log(high)
        return [math.exp(lo + (hi - lo) * i / (num - 1)) for i in range(num)]
    return [low + (high - low) * i / (num - 1) for i in range(num)]


def _is_choice(spec: Mapping[str, Any]) -> bool:
    return spec.get("distribution") == "choice" or ("values" in spec and "distribution" not in spec)


def _dimension(name: str, spec: Any) -> Dimension:
    """Build the dimension of an entry that passed the schema (a dict entry has its distribution)."""
    try:
        _canonical(spec)  # what trial ids hash; a set or an object would fail there
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(
            f"search_space[{name!r}] must be JSON data (strings, numbers, booleans, None, lists and "
            f"dicts with string keys), got {spec!r}"
        ) from err
    if isinstance(spec, (list, tuple)):
        return Dimension(name=name, distribution="choice", values=tuple(spec))
    if not isinstance(spec, Mapping):
        return Dimension(name=name, distribution="choice", values=(spec,))
    if _is_choice(spec):
        return Dimension(name=name, distribution="choice", values=tuple(spec["values"]))
    low, high = spec["low"], spec["high"]
    if low > high:
        raise ValueError(f"search_space[{name!r}]: low must be <= high, got low={low!r}, high={high!r}")
    if not math.isfinite(_width(low, high)):
        raise ValueError(
            f"search_space[{name!r}]: the range is too wide, high - low must be a finite float, "
            f"got low={low!r}, high={high!r}"
        )
    step = spec.get("step")
    if step is not None and not math.isfinite(_width(low, high) / step):
        raise ValueError(
            f"search_space[{name!r}]: step is too small for the range, got step={step!r}, "
            f"low={low!r}, high={high!r}"
        )
    return Dimension(
        name=name,
        distribution=spec["distribution"],
        low=low,
        high=high,
        step=spec.get("step"),
        num=spec.get("num"),
        log=spec.get("log", False),
    )


def _width(low: float, high: float) -> float:
    """``high - low`` as a float; inf when it does not fit one (bounds beyond the float range)."""
    try:
        return float(high) - float(low)
    except OverflowError:
        return math.inf


def _resources_dimension(spec: Any) -> Dimension:
    """Build the ``resources`` entry: one resources dict, a list of them, or a choice of them."""
    if isinstance(spec, Mapping):
        values = tuple(spec["values"]) if _is_choice(spec) else (spec,)
    else:
        values = tuple(spec)
    try:
        normalised = tuple(Resources.from_dict(value).to_dict() for value in values)
    except ValueError as err:
        raise ValueError(f"search_space[{RESOURCES_KEY!r}]: {err}") from err
    return Dimension(name=RESOURCES_KEY, distribution="choice", values=normalised)


def parse_search_space(search_space: Mapping[str, Any] | str) -> list[Dimension]:
    """
    Validate ``search_space`` and return its dimensions, in the space's own order.

    The rules are the JSON Schema of :mod:`airflow_mlops_provider.sweeps.schema` (the one the
    trigger form uses), plus ``low <= high`` and the ``Resources`` checks of a ``resources`` entry.

    :param search_space: The space as a mapping, or its JSON text.
    :raises ValueError: naming the entry and repeating the bad value.
    """
    entries = check_search_space(search_space)
    return [
        _resources_dimension(spec) if name == RESOURCES_KEY else _dimension(name, spec)
        for name, spec in entries.items()
    ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def trial_id(params: Mapping[str, Any], resources: Mapping[str, Any] | None = None) -> str:
    """
    Return the stable id of a trial: the first 16 hex digits of the SHA-256 of its canonical JSON.

    :param params: The trial's parameters.
    :param resources: The trial's resources dict, when it has one (it is part of the identity).
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping of parameter name to value, got {params!r}")
    if resources is not None and not isinstance(resources, Mapping):
        raise ValueError(f"resources must be a resources dict or None, got {resources!r}")
    payload: dict[str, Any] = {"params": dict(params)}
    if resources:
        payload["resources"] = dict(resources)
    try:
        text = _canonical(payload)
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(
            f"a trial's params must be JSON data (strings, numbers, booleans, None, lists and dicts "
            f"with string keys), got {params!r}"
        ) from err
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_trial(params: Mapping[str, Any], resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """
    Return a trial dict ``{"trial_id", "hparams"[, "resources"]}`` ready for ``.expand_kwargs()``.

    :param params: The trial's parameters (JSON-able).
    :param resources: Compute for this trial, validated by ``Resources.from_dict``.
    """
    res = Resources.from_dict(resources).to_dict() if resources else None
    trial: dict[str, Any] = {"trial_id": trial_id(params, res), "hparams": dict(params)}  # checks params
    if res:
        trial["resources"] = res
    return trial


def _trial_from_point(dims: list[Dimension], point: tuple[Any, ...], default_res: dict[str, Any] | None):
    params = {}
    resources = default_res
    for dim, value in zip(dims, point):
        if dim.name == RESOURCES_KEY:
            resources = {**(default_res or {}), **value}
        else:
            params[dim.name] = value
    return make_trial(params, resources)


def _default_resources(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if resources is None:
        return None
    return Resources.from_dict(resources).to_dict() or None


def trials_from_grid(
    search_space: Mapping[str, Any] | str,
    *,
    resources: Mapping[str, Any] | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
) -> list[dict[str, Any]]:
    """
    Return every combination of the space's grid values, one trial each (first key varies slowest).

    :param search_space: The space (mapping or JSON text); see the module docstring.
    :param resources: Resources for every trial; a ``resources`` entry in the space overrides
        its keys per trial.
    :param max_trials: Refuse grids with more trials than this.
    """
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    dims = parse_search_space(search_space)
    default_res = _default_resources(resources)
    for dim in dims:  # every axis has at least one value: one axis over the limit is enough to refuse
        bound = dim.grid_bound()
        if bound > max_trials:
            asked = f"num={dim.num!r} grid points" if dim.num is not None else f"{bound} grid values"
            raise ValueError(
                f"search_space[{dim.name!r}] alone has {asked}, more than max_trials={max_trials!r}; "
                "sample it with trials_from_random or raise max_trials"
            )
    axes = [dim.grid_values() for dim in dims]
    total = math.prod(len(axis) for axis in axes)
    if total > max_trials:
        sizes = {dim.name: len(axis) for dim, axis in zip(dims, axes)}
        raise ValueError(
            f"search_space has a grid of {total} trials {sizes}, more than max_trials={max_trials!r}; "
            "sample it with trials_from_random or raise max_trials"
        )
    return [_trial_from_point(dims, point, default_res) for point in itertools.product(*axes)]


def trials_from_random(
    search_space: Mapping[str, Any] | str,
    n: int,
    seed: int = 0,
    *,
    resources: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """
    Return ``n`` distinct trials drawn at random; the same ``seed`` gives the same trials.

    :param search_space: The space (mapping or JSON text); see the module docstring.
    :param n: Number of trials, an integer >= 1 (at most the number of distinct points).
    :param seed: Seed of the draw (an integer).
    :param resources: Resources for every trial, as in :func:`trials_from_grid`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    dims = parse_search_space(search_space)
    default_res = _default_resources(resources)
    sizes = [dim.size for dim in dims]
    if all(size is not None for size in sizes):
        distinct = math.prod(size for size in sizes if size is not None)
        if n > distinct:
            raise ValueError(
                f"n={n!r} is more than the {distinct} distinct points of search_space; "
                "use trials_from_grid to try them all"
            )
    rng = random.Random(seed)
    trials: dict[str, dict[str, Any]] = {}
    attempts = 0
    while len(trials) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(
                f"could only draw {len(trials)} distinct trials out of n={n!r} from search_space; "
                "widen the space or lower n"
            )
        trial = _trial_from_point(dims, tuple(dim.sample(rng) for dim in dims), default_res)
        trials.setdefault(trial["trial_id"], trial)
    return list(trials.values())
