"""Hypothesis strategies of bad (and a few good) inputs for ``test_bad_inputs.py``.

Each strategy named ``bad_*`` (or a ``BAD_*`` table) draws only inputs the README or the
docstrings say must be refused; the ``valid_*`` ones draw inputs that must be accepted. The
oracles here are written from the documented rules (the README's quantity grammar, the
search-space format), not from the code under test.
"""

from __future__ import annotations

import json
import math
import re
import string
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from airflow_mlops_provider.compute import GPU_VENDORS, RESOURCE_FIELDS
from airflow_mlops_provider.compute.quantities import MAX_MEMORY_BYTES
from airflow_mlops_provider.params import CACHE_MODES, RUNTIMES
from airflow_mlops_provider.sweeps.plan import STRATEGIES
from airflow_mlops_provider.sweeps.schema import DIMENSION_KEYS, DISTRIBUTIONS
from airflow_mlops_provider.sweeps.select import MODES

# --- generic junk -------------------------------------------------------------------------------


class Opaque:
    """An object no validator knows (not JSON, no protocol), with a stable repr."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return f"Opaque({self.tag})"


def _json_object_text(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def deep_json(depth: int, kind: str) -> str:
    """JSON text nested ``depth`` deep (lists or objects), deeper than the json module recurses."""
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


finite = st.floats(allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
beyond_float = st.integers(min_value=2**1024, max_value=2**4000)
short_text = st.text(max_size=8)
letters = st.text(string.ascii_letters, min_size=1, max_size=4)
whitespace = st.text(alphabet=" \t\n\r\x0b\x0c\xa0\u3000", max_size=4)
#: Values that are not JSON: sets, bytes, complex numbers, objects, keys json cannot write or sort.
not_json = st.one_of(
    st.sets(st.integers(-5, 5), max_size=3),
    st.frozensets(st.integers(-5, 5), max_size=2),
    st.binary(max_size=6),
    st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False),
    st.builds(Opaque, st.integers(0, 50)),
    st.dictionaries(st.tuples(st.integers(0, 3)), st.integers(), min_size=1, max_size=2),
    st.builds(lambda k: {k: 1, "a": 2}, st.integers(0, 9)),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    finite,
    non_finite,
    short_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    not_json,
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(-1e6, 1e6), st.text(max_size=5)
)
json_junk = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
deep_json_text = st.builds(
    deep_json, st.sampled_from([3_000, 20_000, 200_000]), st.sampled_from(["list", "dict"])
)
#: Integers that are bad counts (bools, floats, text, lists, non-JSON).
int_junk = st.one_of(
    st.booleans(), st.floats(allow_nan=True), short_text, st.lists(st.integers(), max_size=1), not_json
)


def non_integral(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high).filter(lambda f: f != int(f))


# --- memory quantities and Resources ------------------------------------------------------------

#: The units the README lists, in bytes.
UNITS: dict[str, int] = {
    "": 1,
    **{s: 1024**i for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"], start=1)},
    **{s: 1000**i for i, s in enumerate(["K", "M", "G", "T", "P", "E"], start=1)},
    **{s: 1024**i for i, s in enumerate(["b", "k", "m", "g", "t"])},
}
#: The README's grammar: a number (digits, optional decimals), optional spaces, a unit.
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,2})\s*$")


def _readable_quantity(text: str) -> bool:
    match = _QUANTITY.match(text)
    return bool(match) and match.group(2) in UNITS


bad_unit = st.text(alphabet=string.ascii_letters, min_size=1, max_size=3).filter(lambda u: u not in UNITS)
all_units = st.sampled_from(sorted(UNITS))
bad_quantity_text = st.one_of(
    short_text.filter(lambda s: not _readable_quantity(s)),
    st.builds("{}{}".format, st.integers(1, 10**6), bad_unit),
    st.builds("{} {}B".format, st.integers(1, 999), st.sampled_from(["Gi", "Mi", "K"])),
    st.builds("-{}{}".format, st.integers(0, 10**6), all_units),
    st.builds("{}{}".format, st.sampled_from(["0", "00", "0.0", "0.000"]), all_units),
    st.builds("0.{}".format, st.integers(0, 9999)),  # under one byte
    st.builds("{:e}{}".format, st.floats(1, 1e12), st.sampled_from(["", "Gi"])),
    st.builds(str, st.integers(MAX_MEMORY_BYTES + 1, 10**40)),
    st.builds("{}Ei".format, st.integers(8, 10**6)),
    st.builds(lambda n, u: "9" * n + u, st.integers(25, 5000), st.sampled_from(["", "Ei", ".5Ki", "b"])),
)
bad_quantity_number = st.one_of(
    st.booleans(),
    st.integers(max_value=0),
    st.integers(min_value=MAX_MEMORY_BYTES + 1),
    beyond_float,
    st.floats(max_value=0.0, allow_nan=False),
    non_integral(0.001, 1e9),
    st.floats(min_value=float(2**64), allow_infinity=False),
    non_finite,
)
bad_quantity = st.one_of(
    bad_quantity_text,
    bad_quantity_number,
    junk.filter(lambda v: v is not None and not isinstance(v, (int, float, str))),
)
valid_quantity = st.one_of(
    st.integers(1, 2**40),
    st.builds(
        "{}{}".format, st.integers(1, 4096), st.sampled_from(sorted(u for u in UNITS if UNITS[u] < 1000**5))
    ),
    st.builds("{}{}".format, st.integers(1, 7), st.sampled_from(["Ei", "E", "Pi", "P"])),
    st.builds("{}.5Gi".format, st.integers(0, 64)),
)

#: For each Resources field, values that field must refuse.
BAD_FIELD: dict[str, st.SearchStrategy[Any]] = {
    "cpus": st.one_of(
        st.booleans(),
        st.floats(max_value=0.0, allow_nan=False),
        st.integers(max_value=0),
        non_finite,
        beyond_float,
        short_text,
        junk.filter(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))),
    ),
    "memory": bad_quantity,
    "shm_size": bad_quantity,
    "gpus": st.one_of(
        st.booleans(),
        st.integers(max_value=-1),
        st.floats(allow_nan=True),
        short_text,
        junk.filter(lambda v: isinstance(v, bool) or not isinstance(v, int)),
    ),
    "gpu_vendor": st.one_of(
        short_text.filter(lambda s: s.lower() not in GPU_VENDORS),
        junk.filter(lambda v: not isinstance(v, str)),
    ),
    "gpu_type": st.one_of(whitespace, junk.filter(lambda v: v is not None and not isinstance(v, str))),
}
unknown_resource_key = st.one_of(
    st.text(max_size=8).filter(lambda k: k not in RESOURCE_FIELDS),
    st.integers(),
    st.tuples(st.integers(0, 3)),
    st.none(),
    st.floats(allow_nan=False),
    st.sampled_from(["GPUS", "gpu", "mem", "memory_limit", " cpus", "cpus "]),
)


@st.composite
def valid_resources(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["cpus"] = draw(st.one_of(st.integers(1, 256), st.floats(0.01, 256)))
    if draw(st.booleans()):
        data["memory"] = draw(valid_quantity)
    if draw(st.booleans()):
        data["shm_size"] = draw(valid_quantity)
    gpus = draw(st.integers(0, 8))
    if gpus or draw(st.booleans()):
        data["gpus"] = gpus
    if gpus and draw(st.booleans()):
        data["gpu_type"] = draw(st.sampled_from(["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100", "MI300X"]))
    if draw(st.booleans()):
        data["gpu_vendor"] = draw(st.sampled_from(["nvidia", "amd", "NVIDIA", "Amd"]))
    return data


bad_resources_json = st.one_of(
    st.text(max_size=12).filter(lambda t: not _json_object_text(t)),
    st.builds(json.dumps, json_junk.filter(lambda v: not isinstance(v, dict))),
    deep_json_text,
    st.sampled_from(
        ['{"gpus": -1}', '{"gpus": null}', '{"gpus": []}', '{"cpus": -1}', '{"cpus": "x"}', '{"memory": 0}']
    ),
    st.builds(
        lambda k: json.dumps({k: 1}),
        st.text(min_size=1, max_size=5).filter(lambda k: k not in RESOURCE_FIELDS),
    ),
)

# --- search spaces ------------------------------------------------------------------------------

name_st = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=6).filter(
    lambda n: n != "resources"
)
unique_values = st.lists(
    json_scalar, min_size=1, max_size=4, unique_by=lambda v: json.dumps(v, sort_keys=True)
)


@st.composite
def int_range(draw: st.DrawFn) -> dict[str, Any]:
    log = draw(st.booleans())
    low = draw(st.integers(1 if log else -1000, 1000))
    spec: dict[str, Any] = {"low": low, "high": low + draw(st.integers(0, 7))}
    if draw(st.booleans()):
        spec["distribution"] = "int"
    if log:
        spec["log"] = True
    extra = draw(st.sampled_from(["", "step", "num"]))
    if extra == "step" and not log:
        spec["step"] = draw(st.integers(1, 5))
    elif extra == "num":
        spec["num"] = draw(st.integers(1, 5))
    return spec


@st.composite
def float_range(draw: st.DrawFn) -> dict[str, Any]:
    """A float range a grid can use (with ``num`` or ``step``)."""
    log = draw(st.booleans())
    low = draw(st.floats(1e-6, 1e6) if log else st.floats(-1e6, 1e6))
    high = low + draw(st.floats(0, 1e6))
    spec: dict[str, Any] = {"distribution": "float", "low": low, "high": high}
    if log:
        spec["log"] = True
    step = (high - low) / draw(st.integers(1, 4))
    if not log and step > 0 and draw(st.booleans()):
        spec["step"] = step
    else:
        spec["num"] = draw(st.integers(1, 4))
    return spec


valid_entry = st.one_of(
    unique_values,
    st.builds(lambda v: {"distribution": "choice", "values": v}, unique_values),
    int_range(),
    float_range(),
    json_scalar,  # a constant
)


def valid_space(max_size: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Small spaces (a grid of at most a few thousand trials), every entry usable in a grid."""
    return st.dictionaries(name_st, valid_entry, min_size=1, max_size=max_size)


def _range(**kw: Any) -> dict[str, Any]:
    return {"low": 0, "high": 1, **kw}


_OTHER_KEYS = st.text(min_size=1, max_size=6).filter(lambda k: k not in DIMENSION_KEYS)
#: One search-space entry that breaks a documented rule.
bad_entry = st.one_of(
    st.just([]),
    st.builds(
        lambda d: _range(distribution=d),
        st.one_of(
            short_text.filter(lambda d: d not in DISTRIBUTIONS),
            st.integers(),
            st.none(),
            st.lists(st.integers(), max_size=2),
        ),
    ),
    st.builds(
        lambda v: {"distribution": "choice", "values": v},
        st.one_of(
            st.just([]),
            st.integers(),
            short_text,
            st.none(),
            st.dictionaries(short_text, st.integers(), max_size=2),
        ),
    ),
    st.builds(
        lambda k, v: {"distribution": "choice", "values": [1, 2], k: v},
        st.sampled_from(["low", "high", "step", "num", "log"]),
        st.integers(0, 3),
    ),
    st.builds(lambda k: {"values": [1], k: 1}, st.sampled_from(["low", "high", "step", "num"])),
    st.builds(
        lambda d, k: {**({"distribution": d} if d else {}), **({k: 1} if k else {})},
        st.sampled_from(["", "int", "float"]),
        st.sampled_from(["", "low", "high", "log"]),
    ),
    st.builds(
        lambda low, high: {"distribution": "int", "low": low, "high": high},
        st.one_of(st.floats(allow_nan=True), short_text, st.booleans(), st.none()),
        st.integers(0, 9),
    ),
    st.builds(lambda high: {"distribution": "int", "low": 0, "high": high}, st.floats(1, 10)),
    st.builds(
        lambda low: {"distribution": "float", "low": low, "high": 10.0},
        st.one_of(non_finite, short_text, st.booleans(), st.none(), st.lists(st.integers(), max_size=1)),
    ),
    st.builds(
        lambda lo, gap: {"low": lo, "high": lo - gap},
        st.one_of(st.integers(-100, 100), st.floats(-1e6, 1e6)),
        st.integers(1, 100),
    ),
    st.builds(lambda lo: {"low": lo, "high": 10.0, "log": True}, st.floats(-1e6, 0.0)),
    st.builds(lambda s: {"low": 1.0, "high": 10.0, "log": True, "step": s}, st.floats(0.1, 5)),
    st.builds(lambda n, s: {"low": 0, "high": 10, "num": n, "step": s}, st.integers(1, 5), st.integers(1, 5)),
    st.builds(
        lambda s: {"distribution": "int", "low": 0, "high": 10, "step": s},
        st.one_of(st.integers(max_value=0), st.floats(0.1, 5), st.booleans(), short_text),
    ),
    st.builds(
        lambda s: {"low": 1, "high": 5, "step": s}, st.floats(0.1, 0.9)
    ),  # an int range: step must be an int
    st.builds(
        lambda s: {"distribution": "float", "low": 0.0, "high": 1.0, "step": s},
        st.one_of(st.floats(max_value=0.0, allow_nan=False), short_text, st.booleans(), non_finite),
    ),
    st.builds(
        lambda n: _range(num=n),
        st.one_of(st.integers(max_value=0), st.floats(0.5, 3), st.booleans(), short_text),
    ),
    st.builds(
        lambda v: _range(log=v),
        st.one_of(st.integers(0, 1), short_text, st.none(), st.lists(st.booleans(), max_size=1)),
    ),
    st.builds(
        lambda d: {"distribution": d, "low": 0, "high": 1, "values": [1]}, st.sampled_from(["int", "float"])
    ),
    st.builds(lambda k, v: {**_range(), k: v}, _OTHER_KEYS, json_scalar),
    # too wide for a float, or a step too small for the range
    st.builds(
        lambda lo, hi: {"low": lo, "high": hi},
        st.sampled_from([-1e308, -(10**400)]),
        st.sampled_from([1e308, 10**400]),
    ),
    st.builds(
        lambda hi, n: {"distribution": "int", "low": 0, "high": hi, "num": n}, beyond_float, st.integers(1, 5)
    ),
    st.builds(lambda hi: {"distribution": "int", "low": 1, "high": hi, "log": True}, beyond_float),
    st.builds(
        lambda s: {"distribution": "float", "low": 0.0, "high": 1e308, "step": s}, st.floats(5e-324, 1e-300)
    ),
    # not JSON (what trial ids hash), as a constant or inside a choice
    not_json,
    st.lists(not_json, min_size=1, max_size=2),
)
#: A whole space that is not one.
bad_space = st.one_of(
    junk.filter(lambda v: not isinstance(v, (dict, str))),
    st.text(max_size=10).filter(lambda t: not _json_object_text(t)),
    st.builds(json.dumps, json_junk.filter(lambda v: not isinstance(v, dict))),
    st.just({}),
    st.just("{}"),
    deep_json_text,
    st.dictionaries(
        st.one_of(st.integers(), st.none(), st.tuples(st.integers(0, 2)), st.just("")),
        unique_values,
        min_size=1,
        max_size=2,
    ),
)
#: A ``resources`` entry that is not a resources dict, a list of them or a choice of them.
bad_resources_entry = st.one_of(
    st.one_of(st.integers(), short_text, st.none(), st.booleans(), st.just([])),
    st.lists(junk.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=2),
    st.builds(
        lambda k: {k: 1},
        st.text(min_size=1, max_size=6).filter(lambda k: k not in RESOURCE_FIELDS and k != "values"),
    ),
    st.builds(
        lambda f, v: [{f: v}],
        st.sampled_from(["gpus", "cpus", "memory"]),
        st.sampled_from([-1, "lots", True, []]),
    ),
    st.builds(
        lambda v: {"values": v}, st.one_of(st.just([]), st.lists(st.integers(), min_size=1, max_size=2))
    ),
)
#: Spaces the form's JSON Schema lets through (it cannot say these rules), the planner must refuse.
planner_only_space = st.one_of(
    st.builds(lambda lo, gap: {"x": {"low": lo, "high": lo - gap}}, st.integers(-50, 50), st.integers(1, 9)),
    st.builds(lambda s: {"x": {"low": 1, "high": 5, "step": s}}, st.floats(0.1, 0.9)),
    st.builds(
        lambda f, v: {"x": [1, 2], "resources": {f: v}},
        st.sampled_from(["gpus", "cpus", "memory", "gpu_type"]),
        st.sampled_from([-1, "lots", ""]),
    ),
    st.builds(
        lambda k: {"x": [1], "resources": [{k: 1}]},
        st.text(string.ascii_lowercase, min_size=1, max_size=5).filter(lambda k: k not in RESOURCE_FIELDS),
    ),
    st.just({"x": {"low": -1e308, "high": 1e308}}),
)

# --- sweep params and a trigger's conf -----------------------------------------------------------

#: For each ``sweep_params`` argument, values it must refuse when the DAG is parsed.
BAD_SWEEP_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "strategy": st.one_of(short_text.filter(lambda s: s and s not in STRATEGIES), st.integers().filter(bool)),
    "n_trials": st.one_of(st.integers(max_value=0), st.integers(10_001, 10**30), int_junk),
    "max_trials": st.one_of(st.integers(max_value=0), int_junk),
    "seed": st.one_of(st.integers(max_value=-1), int_junk),
    "runtime": st.one_of(short_text.filter(lambda s: s not in RUNTIMES), st.integers()),
    "gpus_per_trial": st.one_of(st.integers(max_value=-1), st.integers(9, 10**20), int_junk),
    "max_gpus_per_trial": st.one_of(st.integers(max_value=-1), int_junk),
    "metric": st.one_of(
        whitespace,
        st.builds("{} {}".format, letters, letters),
        st.integers(),
        st.lists(st.text(max_size=2), max_size=1),
    ),
    "mode": st.one_of(short_text.filter(lambda s: s not in MODES), st.integers()),
    "min_success_ratio": st.one_of(
        st.floats(max_value=-1e-9),
        st.floats(min_value=1.0 + 1e-9),
        non_finite,
        st.booleans(),
        short_text,
        beyond_float,
    ),
    "max_parallel_tasks": st.one_of(st.integers(max_value=0), st.integers(1025, 10**9), int_junk),
    "cache": st.one_of(short_text.filter(lambda s: s not in CACHE_MODES), st.integers()),
    "cache_key": st.one_of(
        whitespace, st.integers(), st.lists(st.text(max_size=2), max_size=1), st.booleans()
    ),
    "rounds": st.one_of(st.integers(max_value=0), int_junk),
}

#: For each form field, JSON values a trigger's conf may carry that the form must refuse
#: (against ``sweep_params(..., n_trials=5, max_trials=50)``).
BAD_CONF: dict[str, st.SearchStrategy[Any]] = {
    "search_space": st.one_of(
        json_junk.filter(lambda v: not isinstance(v, dict)),
        st.just({}),
        st.builds(
            lambda e: {"x": e},
            st.sampled_from(
                [
                    [],
                    {"distribution": "gaussian", "low": 0, "high": 1},
                    {"values": []},
                    {"low": "a", "high": 1},
                    {"distribution": "int", "low": 0.5, "high": 3},
                    {"low": 0, "high": 1, "log": True},
                    {"low": 0, "high": 9, "num": 2, "step": 1},
                    {"low": 0, "high": 1, "foo": 1},
                    {"distribution": "float", "low": 0, "high": 1, "values": [1]},
                    {"low": 0, "high": 1, "num": 0},
                    {"distribution": "choice", "values": [1], "low": 0},
                    {"low": 0, "high": 1, "log": "yes"},
                ]
            ),
        ),
        st.builds(lambda e: {"resources": e}, st.sampled_from([5, "gpu", [], None, True])),
        st.just({"": [1]}),
    ),
    "strategy": json_junk.filter(lambda v: v not in STRATEGIES),
    "n_trials": st.one_of(
        st.integers(max_value=0),
        st.integers(51, 10**12),
        non_integral(0.5, 10),
        short_text,
        st.booleans(),
        st.none(),
    ),
    "seed": st.one_of(st.integers(max_value=-1), non_integral(0.5, 9), short_text, st.booleans(), st.none()),
    "runtime": json_junk.filter(lambda v: v not in RUNTIMES),
    "gpus_per_trial": st.one_of(
        st.integers(max_value=-1), st.integers(9, 10**6), short_text, st.booleans(), non_integral(0.5, 3)
    ),
    "metric": st.one_of(
        st.just(""),
        st.builds("{} {}".format, letters, letters),
        st.integers(),
        st.none(),
        st.lists(st.integers(), max_size=1),
    ),
    "mode": json_junk.filter(lambda v: v not in MODES),
    "min_success_ratio": st.one_of(
        st.floats(-1e6, -1e-6), st.floats(1.000001, 1e6), short_text, st.booleans(), st.none()
    ),
    "max_parallel_tasks": st.one_of(
        st.integers(max_value=0), st.integers(1025, 10**9), short_text, st.booleans(), non_integral(0.5, 3)
    ),
    "cache": json_junk.filter(lambda v: v not in CACHE_MODES),
    "cache_key": st.one_of(st.just(""), st.integers(), st.booleans(), st.lists(st.integers(), max_size=1)),
}


@st.composite
def valid_sweep_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    max_trials = draw(st.integers(1, 20_000))
    max_gpus = draw(st.integers(0, 16))
    name = st.text(string.ascii_letters + string.digits + "_./-{}", min_size=1, max_size=8)
    kwargs = {
        "search_space": draw(valid_space()),
        "n_trials": draw(st.integers(1, max_trials)),
        "max_trials": max_trials,
        "seed": draw(st.integers(0, 2**63)),
        "runtime": draw(st.sampled_from(RUNTIMES)),
        "gpus_per_trial": draw(st.integers(0, max_gpus)),
        "max_gpus_per_trial": max_gpus,
        "metric": draw(name),
        "mode": draw(st.sampled_from(MODES)),
        "min_success_ratio": draw(st.floats(0, 1)),
        "max_parallel_tasks": draw(st.one_of(st.none(), st.integers(1, 1024))),
        "cache": draw(st.sampled_from(CACHE_MODES)),
        "cache_key": draw(st.one_of(st.none(), name)),
    }
    if draw(st.booleans()):
        kwargs.update(
            rounds=draw(st.integers(1, 8)), trials_per_round=draw(st.integers(1, 64)), strategy="tpe"
        )
    return kwargs


# --- Feast windows ------------------------------------------------------------------------------

aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2029, 12, 31), timezones=st.just(timezone.utc)
)
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def _iso_or_template(text: str) -> bool:
    if "{{" in text or "{%" in text:
        return True
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


#: A window bound that is not a timezone-aware datetime (or its ISO text) within years 1-9999 UTC.
bad_datetime = st.one_of(
    naive,
    naive.map(datetime.isoformat),
    st.text(max_size=12).filter(lambda t: not _iso_or_template(t)),
    st.dates(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=1),
    st.binary(max_size=3),
    st.builds("0001-01-01T00:00:00+{:02d}:00".format, st.integers(1, 23)),
    st.builds("9999-12-31T23:59:59-{:02d}:00".format, st.integers(1, 23)),
    st.sampled_from(
        ["2024-13-01T00:00:00+00:00", "2024-02-30T00:00:00Z", "yesterday", "now", " ", "2024-01-01T25:00"]
    ),
)
bad_chunk = st.one_of(
    st.timedeltas(max_value=timedelta(0)),
    st.integers(),
    st.floats(allow_nan=True),
    short_text,
    st.none(),
    st.booleans(),
)
bad_views = st.one_of(
    st.just([]),
    short_text,
    st.integers(),
    st.lists(
        st.one_of(
            whitespace,
            st.integers(),
            st.none(),
            st.lists(st.text(string.ascii_letters, max_size=2), max_size=1),
        ),
        min_size=1,
        max_size=3,
    ),
    st.dictionaries(st.text(string.ascii_letters, max_size=3), st.integers(), max_size=2),
)
bad_staleness = st.one_of(
    st.timedeltas(max_value=timedelta(0)),
    st.integers(max_value=0),
    st.floats(max_value=0.0, allow_nan=False),
    non_finite,
    st.integers(10**15, 10**30),
    st.floats(1e15, 1e300),
    st.just(timedelta.max),
    st.booleans(),
    short_text,
    st.none(),
    st.lists(st.integers(), max_size=1),
)
#: ``(argument, value)`` pairs the materialize operators must refuse in ``__init__``.
bad_operator_args = st.one_of(
    st.tuples(
        st.just("online_write_batch_size"),
        st.one_of(st.integers(max_value=0), st.booleans(), st.floats(allow_nan=True), short_text),
    ),
    st.tuples(
        st.just("newer_wins"),
        st.one_of(st.integers(), st.none(), short_text, st.lists(st.booleans(), max_size=1)),
    ),
    st.tuples(
        st.just("asset_alias"),
        st.one_of(
            st.integers(),
            st.booleans(),
            st.lists(st.text(max_size=2), min_size=1, max_size=1),
            st.text(" \t", min_size=1, max_size=3),
            st.builds(lambda n: "a" * n, st.integers(1501, 3000)),
        ),
    ),
)
