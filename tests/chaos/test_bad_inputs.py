"""Bad input at scale: property-based checks of every public validation surface (issue 18).

Hypothesis generates invalid inputs (:mod:`tests.chaos.bad_input_strategies`) for
``Resources`` and memory quantities, search spaces, sweep params and a trigger's conf, and the
Feast windows (materialization start/end, backfill chunks, freshness thresholds, lock
timeouts). Each must be refused with *our* clear error:

- a ``ValueError`` (``ParamValidationError`` is one) or an ``AirflowFailException``;
- raised by our own code (``airflow_mlops_provider``), or by Airflow's ``Param`` validation for
  the trigger form, never from inside a third-party library;
- whose message names the argument and, where the code promises it, repeats the value.

Every distinct bad input is counted; the last test prints ``bad inputs: N generated, M unclear``
and asserts N >= 1000 and M == 0. Valid-input properties (round-trips) keep the strategies
honest. The settings are derandomized, so every run sees the same examples.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pickle
import sys
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException
from airflow.serialization.definitions.param import SerializedParam, SerializedParamsDict
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import airflow_mlops_provider
from airflow_mlops_provider.compute import RESOURCE_FIELDS, Resources
from airflow_mlops_provider.compute.quantities import MAX_MEMORY_BYTES, format_k8s_quantity, parse_memory
from airflow_mlops_provider.hooks.feast import FeastHook
from airflow_mlops_provider.operators.feast import (
    FeastMaterializeIncrementalOperator,
    FeastMaterializeOperator,
    backfill_chunks,
    per_feature_view,
    resolve_window,
)
from airflow_mlops_provider.params import RUNTIMES, runtime_param, search_space_param, sweep_params
from airflow_mlops_provider.sensors.feast import FeastFeatureFreshnessSensor
from airflow_mlops_provider.sweeps.adaptive import check_strategy_space
from airflow_mlops_provider.sweeps.batching import batch_trials
from airflow_mlops_provider.sweeps.halving import halving
from airflow_mlops_provider.sweeps.plan import STRATEGIES, plan_sweep, planned_trials
from airflow_mlops_provider.sweeps.select import MODES, select_best
from airflow_mlops_provider.sweeps.space import (
    make_trial,
    parse_search_space,
    trials_from_grid,
    trials_from_random,
)
from airflow_mlops_provider.triggers.feast import FeastFeatureFreshnessTrigger
from tests.chaos import bad_input_strategies as bad

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

pytestmark = [pytest.mark.chaos]

OUR_CODE = Path(airflow_mlops_provider.__file__).resolve().parent
#: Where Airflow's own Param validation raises (allowed for the trigger form only).
AIRFLOW_PARAMS = ("airflow/sdk/definitions/param.py", "airflow/serialization/definitions/param.py")

#: Digests of the distinct bad inputs generated (surface + repr), and the distinct unclear answers.
BAD_INPUTS: set[str] = set()
UNCLEAR: dict[str, str] = {}
#: The properties that ran in this process (the summary runs the others, e.g. under xdist).
RAN: set[str] = set()


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def _ran() -> None:
    RAN.add(sys._getframe(1).f_code.co_name)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep>"


def expect_clear(
    surface: str,
    value: Any,
    call: Callable[[], Any],
    *,
    mentions: Iterable[str] = (),
    any_of: Iterable[str] = (),
    form: bool = False,
) -> BaseException:
    """
    Call ``call()``: it must raise our clear error about ``value``. Count the input and the verdict.

    :param surface: Names the validation surface (and keeps equal values of two surfaces apart).
    :param value: The bad input (counted by its repr).
    :param mentions: Texts the message must all contain (the argument's name, the value's repr).
    :param any_of: Texts of which the message must contain at least one.
    :param form: The error may come from Airflow's Param validation (the trigger form).
    :return: The error raised.
    """
    text = f"{surface}: {_repr(value)}"
    BAD_INPUTS.add(hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest())
    caught: BaseException | None = None
    try:
        call()
        problem = "no error at all"
    except (ValueError, AirflowFailException) as err:
        caught = err
        frames = traceback.extract_tb(err.__traceback__)
        origin = Path(frames[-1].filename).resolve() if frames else Path("?")
        message = str(err)
        if OUR_CODE not in origin.parents and not (form and origin.as_posix().endswith(AIRFLOW_PARAMS)):
            problem = f"{type(err).__name__} raised inside {origin}: {message[:300]}"
        elif missing := [m for m in mentions if m not in message]:
            problem = f"message {message[:300]!r} does not mention {[m[:80] for m in missing]}"
        elif (options := list(any_of)) and not any(m in message for m in options):
            problem = f"message {message[:300]!r} mentions none of {options}"
        else:
            problem = ""
    except Exception as err:
        caught = err
        last = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
        problem = f"{type(err).__name__} instead of ValueError/AirflowFailException: {str(err)[:300]}\n{last}"
    if problem:
        UNCLEAR[text] = f"{text[:300]}: {problem}"
        raise AssertionError(f"unclear answer to {text[:300]}: {problem}")
    assert caught is not None
    return caught


# --- Resources and memory quantities ------------------------------------------------------------


@_settings(250)
@given(base=bad.valid_resources(), field=st.sampled_from(RESOURCE_FIELDS), data=st.data())
@example(base={}, field="cpus", data=None).via("regression: cpus=10**400 gave OverflowError")
def test_resources_refuse_a_bad_field_naming_it_and_its_value(base, field, data):
    _ran()
    value = 10**400 if data is None else data.draw(bad.BAD_FIELD[field], label=field)
    wrong = {**base, field: value}
    if field == "gpu_type":
        wrong["gpus"] = base.get("gpus") or 1
    mentions = [field, _repr(value)]
    expect_clear("Resources.from_dict", wrong, lambda: Resources.from_dict(wrong), mentions=mentions)
    expect_clear("Resources()", wrong, lambda: Resources(**wrong), mentions=mentions)


@_settings(60)
@given(base=bad.valid_resources(), gpu_type=st.text(min_size=1, max_size=10).filter(str.strip))
def test_resources_refuse_a_gpu_type_without_gpus(base, gpu_type):
    _ran()
    wrong = {**base, "gpu_type": gpu_type, "gpus": 0}
    expect_clear(
        "Resources gpu_type", wrong, lambda: Resources.from_dict(wrong), mentions=["gpu_type", repr(gpu_type)]
    )


@_settings(150)
@given(
    base=bad.valid_resources(),
    extra=st.dictionaries(bad.unknown_resource_key, bad.json_scalar, min_size=1, max_size=3),
)
@example(base={}, extra={1: 2, "a": 3}).via("regression: TypeError sorting mixed-type unknown keys")
def test_resources_refuse_unknown_fields_listing_them(base, extra):
    _ran()
    wrong = {**base, **extra}
    mentions = ["unknown field", *(_repr(k) for k in extra)]
    expect_clear("Resources unknown", wrong, lambda: Resources.from_dict(wrong), mentions=mentions)


@_settings(120)
@given(
    value=st.one_of(
        bad.junk.filter(lambda v: not isinstance(v, dict)), st.lists(st.tuples(bad.short_text, st.integers()))
    )
)
def test_resources_refuse_what_is_not_a_mapping(value):
    _ran()
    expect_clear(
        "Resources.from_dict(x)",
        value,
        lambda: Resources.from_dict(value),
        mentions=["resources", _repr(value)],
    )
    if not isinstance(value, str) and value is not None:
        expect_clear(
            "Resources.coerce(x)",
            value,
            lambda: Resources.coerce(value),
            mentions=["resources", _repr(value)],
        )


@_settings(150)
@given(text=bad.bad_resources_json)
@example(text=bad.deep_json(200_000, "list")).via("regression: RecursionError from json.loads")
def test_resources_refuse_bad_json_text(text):
    _ran()
    names = ["resources", "gpus", "cpus", "memory"]
    expect_clear("Resources.from_json", text, lambda: Resources.from_json(text), any_of=names)
    expect_clear("Resources.coerce(text)", text, lambda: Resources.coerce(text), any_of=names)


@_settings(200)
@given(value=bad.bad_quantity, field=st.sampled_from(["memory", "shm_size", "limit"]))
@example(value="9" * 400, field="memory").via("regression: OverflowError from float('999...')")
@example(value=10**400, field="memory").via("regression: OverflowError from math.isfinite(10**400)")
@example(value=1e308, field="memory").via("regression: 1e308 bytes were accepted")
def test_memory_quantities_refuse_bad_values(value, field):
    _ran()
    expect_clear(
        "parse_memory", value, lambda: parse_memory(value, field=field), mentions=[field, _repr(value)]
    )


@_settings(150)
@given(number=st.integers(1, 10**7), unit=bad.all_units, pad=st.sampled_from(["", " ", "  "]))
def test_memory_quantities_read_every_unit_exactly(number, unit, pad):
    _ran()
    expected = number * bad.UNITS[unit]
    text = f"{pad}{number}{pad}{unit}{pad}"
    if expected > MAX_MEMORY_BYTES:
        expect_clear("parse_memory(max)", text, lambda: parse_memory(text), mentions=["memory", repr(text)])
        return
    assert parse_memory(text) == expected
    assert parse_memory(format_k8s_quantity(expected)) == expected
    assert Resources(memory=text) == Resources(memory=expected)


@_settings(150)
@given(data=bad.valid_resources())
def test_resources_round_trip(data):
    _ran()
    res = Resources.from_dict(data)
    assert Resources.from_dict(res.to_dict()) == res
    assert Resources.from_json(res.to_json()) == res
    assert Resources.coerce(res.to_json()) == res == Resources.coerce(res.to_dict()) == Resources.coerce(res)
    assert pickle.loads(pickle.dumps(res)) == res
    assert hash(Resources.from_dict(data)) == hash(res)


# --- search spaces ------------------------------------------------------------------------------


@st.composite
def space_with_one_bad_entry(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    good = draw(bad.valid_space(max_size=2))
    name = draw(bad.name_st.filter(lambda n: n not in good))
    items = list(good.items())
    items.insert(draw(st.integers(0, len(items))), (name, draw(bad.bad_entry)))
    return dict(items), name


@_settings(250)
@given(case=space_with_one_bad_entry())
@example(case=({"x": {"distribution": "float", "low": -1e308, "high": 1e308, "num": 3}}, "x")).via(
    "regression: a grid of NaN values"
)
@example(case=({"x": {"distribution": "int", "low": 0, "high": 10**400, "num": 3}}, "x")).via(
    "regression: OverflowError in the grid"
)
@example(case=({"x": {"distribution": "float", "low": -1e308, "high": 1e308, "step": 1.0}}, "x")).via(
    "regression: OverflowError in the grid"
)
@example(case=({"x": {"distribution": "float", "low": 0.0, "high": 1e308, "step": 1e-300}}, "x")).via(
    "regression: OverflowError from round(inf) when sampling, int(inf) in the grid"
)
@example(case=({"x": {"low": -1e308, "high": 10**400}}, "x")).via(
    "regression: OverflowError from math.isfinite(10**400) inside the schema's number check"
)
@example(case=({"x": {1, 2}}, "x")).via("regression: TypeError from json.dumps in trial_id")
@example(case=({"x": [{1: 2, "a": 3}]}, "x")).via("regression: TypeError sorting mixed-type keys")
def test_search_spaces_refuse_a_bad_entry_naming_it(case):
    _ran()
    space, name = case
    where = [f"search_space[{name!r}]"]
    expect_clear("parse_search_space", space, lambda: parse_search_space(space), mentions=where)
    expect_clear("trials_from_grid", space, lambda: trials_from_grid(space), mentions=where)
    expect_clear("trials_from_random", space, lambda: trials_from_random(space, 3, seed=1), mentions=where)
    expect_clear(
        "planned_trials", space, lambda: planned_trials(space, strategy="random", n_trials=2), mentions=where
    )


@_settings(200)
@given(space=bad.bad_space)
@example(space=bad.deep_json(100_000, "list")).via("regression: RecursionError from json.loads")
def test_search_spaces_refuse_what_is_not_a_space(space):
    _ran()
    expect_clear("parse_search_space(x)", space, lambda: parse_search_space(space), mentions=["search_space"])
    expect_clear("search_space_param(x)", space, lambda: search_space_param(space), mentions=["search_space"])


@_settings(120)
@given(good=bad.valid_space(max_size=2), entry=bad.bad_resources_entry)
def test_search_spaces_refuse_bad_resources_entries(good, entry):
    _ran()
    space = {**good, "resources": entry}
    expect_clear(
        "space resources", space, lambda: trials_from_grid(space), mentions=["search_space['resources']"]
    )


@_settings(120)
@given(
    space=bad.valid_space(),
    n=st.one_of(
        st.booleans(), st.integers(max_value=0), st.floats(allow_nan=True), bad.short_text, st.none()
    ),
    seed=st.one_of(st.floats(0.5, 9), bad.short_text, st.booleans(), st.none()),
)
def test_random_draws_refuse_bad_n_and_seed(space, n, seed):
    _ran()
    expect_clear(
        "trials_from_random n", (space, n), lambda: trials_from_random(space, n, 0), mentions=["n ", _repr(n)]
    )
    expect_clear(
        "trials_from_random seed",
        seed,
        lambda: trials_from_random(space, 1, seed),
        mentions=["seed", _repr(seed)],
    )


@_settings(100)
@given(
    case=st.one_of(
        st.builds(
            lambda hi: ({"x": {"distribution": "int", "low": 0, "high": hi}}, "x"), st.integers(10**5, 10**15)
        ),
        st.builds(
            lambda n: ({"x": {"low": 0.0, "high": 1.0, "num": n}}, "x"), st.integers(10**5 + 1, 10**12)
        ),
        st.builds(lambda s: ({"x": {"low": 0.0, "high": 1e6, "step": s}}, "x"), st.floats(1e-9, 9.99)),
        st.builds(
            lambda lo: ({"lr": {"low": lo, "high": lo + 1.0}}, "lr"), st.floats(-1e6, 1e6)
        ),  # no num/step
    )
)
@example(case=({"x": {"distribution": "int", "low": 0, "high": 10**12}}, "x")).via(
    "regression: list(range(10**12)) was built before the max_trials check"
)
def test_grids_refuse_oversized_or_unbounded_axes_before_listing_them(case):
    _ran()
    space, name = case
    expect_clear("grid axis", space, lambda: trials_from_grid(space), mentions=[f"search_space[{name!r}]"])


@_settings(60)
@given(space=bad.valid_space(), max_trials=st.integers(1, 3))
def test_grids_refuse_more_trials_than_max_trials(space, max_trials):
    _ran()
    if math.prod(len(d.grid_values()) for d in parse_search_space(space)) <= max_trials:
        space = {**space, "zz_many": list(range(max_trials + 1))}
    expect_clear(
        "grid max_trials",
        (space, max_trials),
        lambda: trials_from_grid(space, max_trials=max_trials),
        mentions=[f"max_trials={max_trials}"],
    )


@_settings(120)
@given(
    trials=st.one_of(
        bad.junk.filter(lambda v: not isinstance(v, (list, tuple)) or not v),
        st.lists(bad.junk.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=3),
    ),
    limit=st.one_of(st.integers(max_value=0), bad.int_junk),
    params=st.one_of(
        bad.junk.filter(lambda v: not isinstance(v, dict)), st.builds(lambda v: {"a": v}, bad.not_json)
    ),
    max_trials=st.one_of(st.integers(max_value=0), bad.int_junk, st.none()),
    strategy=st.one_of(bad.json_junk, bad.not_json).filter(
        lambda s: s not in ("tpe", "cmaes", "qmc", "random")
    ),
    resources=bad.junk.filter(lambda v: v is not None and not isinstance(v, dict) and bool(v)),
)
@example(trials=[1, 2], limit=0, params=[1], max_trials="5", strategy="grid", resources=[1, 2]).via(
    "regression: TypeError from dict(1) in batch_trials and dict([1]) in make_trial and planned_trials, "
    "and from 1 > '5' in trials_from_grid"
)
def test_sweep_helpers_refuse_bad_arguments(trials, limit, params, max_trials, strategy, resources):
    _ran()
    call = lambda: planned_trials({"a": [1]}, resources=resources)  # noqa: E731
    expect_clear("planned_trials resources", resources, call, mentions=["resources", _repr(resources)])
    trial = {"trial_id": "t", "hparams": {}}
    odd = [_repr(t) for t in trials if not isinstance(t, dict)] if isinstance(trials, list) else []
    call = lambda: batch_trials(trials)  # noqa: E731
    expect_clear("batch_trials trials", trials, call, mentions=["trials"], any_of=[_repr(trials), *odd[:1]])
    call = lambda: batch_trials([trial], max_parallel_tasks=limit)  # noqa: E731
    expect_clear("batch_trials limit", limit, call, mentions=["max_parallel_tasks", _repr(limit)])
    call = lambda: batch_trials([trial], max_map_length=limit)  # noqa: E731
    expect_clear("batch_trials max_map_length", limit, call, mentions=["max_map_length", _repr(limit)])
    expect_clear("make_trial params", params, lambda: make_trial(params), mentions=["params", _repr(params)])
    call = lambda: trials_from_grid({"a": [1]}, max_trials=max_trials)  # noqa: E731
    expect_clear("trials_from_grid max_trials", max_trials, call, mentions=["max_trials", _repr(max_trials)])
    call = lambda: check_strategy_space({"a": [1, 2]}, strategy)  # noqa: E731
    expect_clear("check_strategy_space", strategy, call, mentions=["strategy", _repr(strategy)])


def _in_range(value: float, low: float, high: float) -> bool:
    slack = 1e-11 * max(abs(low), abs(high))  # values are rounded to 12 significant digits
    return math.isfinite(value) and low - slack <= value <= high + slack


@_settings(70)
@given(space=bad.valid_space(), seed=st.integers(0, 2**40))
@example(space={"x": {"distribution": "float", "low": 0.0, "high": 0.0, "num": 2}}, seed=0).via(
    "regression: a float range with low == high gave num identical trials"
)
@example(space={"x": {"distribution": "float", "low": 1.0, "high": 1.0 + 4e-12, "step": 1e-12}}, seed=0).via(
    "regression: a step below the 12 rounded digits gave identical trials"
)
def test_valid_spaces_give_stable_distinct_trials_within_bounds(space, seed):
    _ran()
    grid = trials_from_grid(space)
    ids = [t["trial_id"] for t in grid]
    assert len(set(ids)) == len(ids), f"the grid of {space!r} repeats trials: {grid!r}"
    assert trials_from_grid(json.dumps(space)) == grid
    n = min(len(grid), 5)
    drawn = trials_from_random(space, n, seed)
    assert drawn == trials_from_random(space, n, seed)
    assert len({t["trial_id"] for t in drawn}) == n
    dims = {d.name: d for d in parse_search_space(space)}
    for trial in grid + drawn:
        for name, value in trial["hparams"].items():
            dim = dims[name]
            assert (
                value in dim.values if dim.distribution == "choice" else _in_range(value, dim.low, dim.high)
            )
    # the trigger form (Airflow's own jsonschema) accepts every space the planner accepts
    ParamsDict({"search_space": search_space_param(space)}).validate()


# --- sweep params and a trigger's conf -----------------------------------------------------------

SPACE = {
    "lr": {"distribution": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "depth": {"low": 2, "high": 8},
}
FORM = sweep_params(search_space=SPACE, n_trials=5, seed=0, max_trials=50)
#: The fields the planning tests' confs set (plan_sweep falls back to defaults for the others);
#: copying and validating all thirteen for each example would triple their time.
PLAN_FORM = {k: FORM[k] for k in ("search_space", "strategy", "n_trials", "seed", "max_parallel_tasks")}


@_settings(300)
@given(arg=st.sampled_from(sorted(bad.BAD_SWEEP_ARGS)), data=st.data())
@example(arg="rounds", data=None).via("regression: TypeError comparing '3' < 1")
def test_sweep_params_refuse_a_bad_argument(arg, data):
    _ran()
    value = "3" if data is None else data.draw(bad.BAD_SWEEP_ARGS[arg], label=arg)
    kwargs: dict[str, Any] = {"search_space": SPACE, arg: value}
    if arg == "rounds":
        kwargs["trials_per_round"] = 4
    expect_clear("sweep_params", kwargs, lambda: sweep_params(**kwargs), mentions=[_repr(value)])


@_settings(60)
@given(
    allowed=st.one_of(
        st.integers(),
        bad.short_text,
        st.lists(st.one_of(bad.short_text, st.lists(st.integers(), max_size=1)), max_size=3),
    ).filter(lambda a: not (isinstance(a, list) and a and all(x in RUNTIMES for x in a)))
)
@example(allowed=[["docker"]]).via("regression: TypeError from set() of an unhashable item")
def test_runtime_param_refuses_bad_allowed(allowed):
    _ran()
    expect_clear(
        "runtime_param", allowed, lambda: runtime_param(allowed=allowed), mentions=["allowed", _repr(allowed)]
    )


def _server_params(params: dict[str, Any]) -> SerializedParamsDict:
    """The params as the API server holds them; it validates a trigger's conf with these."""
    return SerializedParamsDict(
        {k: SerializedParam(p.value, p.description, **copy.deepcopy(p.schema)) for k, p in params.items()}
    )


@_settings(20)
@given(kwargs=bad.valid_sweep_kwargs())
def test_the_form_accepts_every_default_sweep_params_accepts(kwargs):
    _ran()
    params = sweep_params(**kwargs)
    resolved = ParamsDict(params).validate()
    assert _server_params(params).validate() == resolved
    assert resolved["search_space"] == kwargs["search_space"]


def test_a_metric_the_form_would_refuse_is_refused_at_parse_time():
    # regression: sweep_params(metric="val loss") parsed, then every run's form refused its default
    expect_clear(
        "sweep_params metric",
        "val loss",
        lambda: sweep_params(search_space=SPACE, metric="val loss"),
        mentions=["metric", "'val loss'"],
    )


@_settings(200)
@given(key=st.sampled_from(sorted(bad.BAD_CONF)), data=st.data())
def test_the_trigger_form_refuses_a_bad_conf_value_naming_the_field(key, data):
    _ran()
    conf = {key: data.draw(bad.BAD_CONF[key], label=key)}
    # Only the field the conf sets: the others hold valid defaults and cannot change the verdict
    # (validating all thirteen fields, twice, is what made this the slowest property).
    form = {key: FORM[key]}

    def sdk_form() -> None:
        params = ParamsDict(copy.deepcopy(form))
        params.update(conf)
        params.validate()

    mentions = [f"param {key}"]
    expect_clear("trigger form (sdk)", conf, sdk_form, mentions=mentions, form=True)
    server = _server_params(form)
    expect_clear(
        "trigger form (api)", conf, lambda: server.deep_merge(conf).validate(), mentions=mentions, form=True
    )


class _TI:
    dag_id = "bad_inputs"
    task_id = "plan_sweep"
    map_index = -1
    run_id = "manual__bad_inputs"

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class _Task:
    def render_template(self, value: str, context: dict[str, Any]) -> str:
        return value.replace("{{ run_id }}", context["run_id"])


def run_plan_sweep(params: dict[str, Any]) -> tuple[list[dict[str, Any]], _TI]:
    """Run the real ``plan_sweep`` callable with these resolved DAG params, tracking off."""
    ti = _TI()
    context = {"params": params, "ti": ti, "task": _Task(), "run_id": ti.run_id}
    with (
        mock.patch("airflow_mlops_provider.sweeps.plan.get_current_context", return_value=context),
        mock.patch("airflow_mlops_provider.sweeps.planning.get_current_context", return_value=context),
    ):
        refs = plan_sweep.function(mlflow_conn_id=None)
    return refs, ti


@_settings(50)
@given(
    space=st.one_of(
        st.tuples(bad.planner_only_space, st.sampled_from(STRATEGIES)),
        st.tuples(
            st.builds(
                lambda hi: {"x": {"distribution": "int", "low": 0, "high": hi}}, st.integers(10**6, 10**18)
            ),
            st.just("grid"),
        ),
    ),
    n_trials=st.integers(1, 50),
    seed=st.integers(0, 10**6),
)
def test_the_planner_refuses_what_the_form_lets_through(space, n_trials, seed):
    _ran()
    search_space, strategy = space
    conf = {"search_space": search_space, "strategy": strategy, "n_trials": n_trials, "seed": seed}

    def trigger_and_plan() -> None:
        run_plan_sweep(_server_params(PLAN_FORM).deep_merge(conf).validate())

    err = expect_clear("form, then plan_sweep", conf, trigger_and_plan, mentions=["search_space"], form=True)
    assert isinstance(err, AirflowFailException) or "Invalid input for param search_space" in str(err)


@_settings(40)
@given(
    space=bad.valid_space(max_size=2),
    strategy=st.sampled_from(STRATEGIES),
    n_trials=st.integers(1, 4),
    seed=st.integers(0, 10**6),
    max_parallel=st.one_of(st.none(), st.integers(1, 4)),
)
def test_a_valid_conf_plans_batches_that_hold_every_trial(space, strategy, n_trials, seed, max_parallel):
    _ran()
    conf = {
        "search_space": space,
        "strategy": strategy,
        "n_trials": n_trials,
        "seed": seed,
        "max_parallel_tasks": max_parallel,
    }
    resolved = _server_params(PLAN_FORM).deep_merge(conf).validate()
    try:
        refs, ti = run_plan_sweep(resolved)
    except AirflowFailException as err:  # more random trials than the space has distinct points
        message = str(err)
    else:
        message = ""
    if message:
        assert "distinct points" in message or "distinct trials" in message, message
        return
    trials = ti.xcoms["sweep_trials"]
    assert [t for ref in refs for t in ti.xcoms[ref["batch"]["key"]]] == trials
    assert len({t["trial_id"] for t in trials}) == len(trials)
    assert max_parallel is None or len(refs) <= max_parallel


@_settings(120)
@given(
    args=st.one_of(
        st.tuples(
            st.one_of(
                st.integers(max_value=0),
                st.floats(max_value=0.0),
                bad.non_finite,
                bad.beyond_float,
                st.booleans(),
                bad.short_text,
                st.none(),
            ),
            st.just(27),
            st.just(3),
        ),
        st.tuples(
            st.just(1),
            st.one_of(st.integers(max_value=0), bad.non_finite, bad.beyond_float, bad.short_text),
            st.just(3),
        ),
        st.tuples(
            st.just(1),
            st.just(27),
            st.one_of(
                st.floats(max_value=1.999),
                st.integers(max_value=1),
                st.just(math.nan),
                bad.short_text,
                st.booleans(),
            ),
        ),
        st.tuples(st.integers(2, 100), st.integers(1, 2), st.just(2)),
        st.tuples(st.just(5e-324), st.floats(1e10, 1e308), st.just(2)),
    )
)
@example(args=(1, 10**400, 3)).via("regression: OverflowError from math.isfinite")
@example(args=(5e-324, 1e308, 2)).via("regression: OverflowError in Halving.budgets")
def test_halving_refuses_bad_budgets(args):
    _ran()

    def build() -> None:
        halving(*args).budgets  # noqa: B018 (halving_sweep reads the rungs when the DAG is parsed)

    expect_clear("halving", args, build, any_of=["min_budget", "max_budget", "eta"])


@_settings(60)
@given(metric=st.one_of(st.just(""), st.integers(), st.none(), st.lists(st.text())), ratio=st.floats(0, 1))
def test_select_best_refuses_a_bad_metric(metric, ratio):
    _ran()
    results = [{"trial_id": "a", "hparams": {}, "status": "success", "metrics": {"loss": 1.0}}]
    expect_clear(
        "select_best metric",
        metric,
        lambda: select_best(results, metric=metric, min_success_ratio=ratio),
        mentions=["metric", _repr(metric)],
    )


@_settings(60)
@given(
    mode=st.one_of(bad.short_text.filter(lambda m: m not in MODES), st.integers()),
    ratio=st.one_of(
        st.floats(max_value=-1e-9),
        st.floats(min_value=1 + 1e-9),
        bad.non_finite,
        bad.short_text,
        st.booleans(),
    ),
)
def test_select_best_refuses_a_bad_mode_or_ratio(mode, ratio):
    _ran()
    results = [{"trial_id": "a", "hparams": {}, "status": "success", "metrics": {"loss": 1.0}}]
    call = lambda: select_best(results, metric="loss", mode=mode)  # noqa: E731
    expect_clear("select_best mode", mode, call, mentions=["mode", _repr(mode)])
    call = lambda: select_best(results, metric="loss", min_success_ratio=ratio)  # noqa: E731
    expect_clear("select_best ratio", ratio, call, mentions=["min_success_ratio", _repr(ratio)])


# --- Feast windows ------------------------------------------------------------------------------

NOW = datetime(2030, 6, 1, tzinfo=timezone.utc)


@_settings(200)
@given(which=st.sampled_from(["start", "end"]), wrong=bad.bad_datetime, good=bad.aware)
@example(
    which="start", wrong="0001-01-01T00:00:00+01:00", good=datetime(2024, 1, 1, tzinfo=timezone.utc)
).via("regression: OverflowError from astimezone")
def test_feast_windows_refuse_bad_bounds_naming_them(which, wrong, good):
    _ran()
    start, end = (wrong, good) if which == "start" else (good, wrong)
    arg = f"{which}_date"
    expect_clear(
        "backfill_chunks bound",
        (start, end),
        lambda: backfill_chunks(start, end, chunk=timedelta(days=1)),
        mentions=[which, _repr(wrong)],
    )
    expect_clear(
        "resolve_window bound",
        (start, end),
        lambda: resolve_window(start, end, {}, now=NOW),
        mentions=[arg, _repr(wrong)],
    )
    expect_clear(
        "FeastMaterializeOperator bound",
        (arg, wrong),
        lambda: FeastMaterializeOperator(task_id="m", **{arg: wrong}),
        mentions=[arg, _repr(wrong)],
    )
    if which == "end":
        call = lambda: FeastMaterializeIncrementalOperator(task_id="m", end_date=wrong)  # noqa: E731
        expect_clear("FeastMaterializeIncrementalOperator bound", wrong, call, mentions=[arg])


@_settings(120)
@given(
    start=bad.aware,
    back=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)),
    future=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3000)),
    as_text=st.booleans(),
)
def test_feast_windows_refuse_reversed_or_future_windows(start, back, future, as_text):
    _ran()
    end, ahead = start - back, NOW + future

    def fmt(d: datetime) -> Any:
        return d.isoformat() if as_text else d

    call = lambda: resolve_window(fmt(start), fmt(end), {}, now=NOW)  # noqa: E731
    expect_clear(
        "resolve_window reversed", (start, end), call, mentions=["start_date must be before end_date"]
    )
    call = lambda: backfill_chunks(fmt(start), fmt(end), chunk=timedelta(hours=1))  # noqa: E731
    expect_clear("backfill_chunks reversed", (start, end), call, mentions=["start must be before end"])
    call = lambda: resolve_window(fmt(start), fmt(ahead), {}, now=NOW)  # noqa: E731
    expect_clear("resolve_window future", (start, ahead), call, mentions=["end_date", "future"])
    call = lambda: resolve_window(fmt(start), None, {}, now=NOW)  # noqa: E731
    expect_clear("resolve_window no end", start, call, mentions=["end_date"])


@_settings(200)
@given(
    start=bad.aware,
    span=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=400)),
    chunk=bad.bad_chunk,
    views=bad.bad_views,
)
def test_backfill_chunks_refuse_bad_chunks_and_views(start, span, chunk, views):
    _ran()
    end = start + span
    call = lambda: backfill_chunks(start, end, chunk=chunk)  # noqa: E731
    expect_clear("backfill_chunks chunk", chunk, call, mentions=["chunk", _repr(chunk)])
    call = lambda: backfill_chunks(start, end, chunk=timedelta(hours=6), feature_views=views)  # noqa: E731
    expect_clear("backfill_chunks views", views, call, mentions=["feature_views", _repr(views)])
    expect_clear(
        "per_feature_view", views, lambda: per_feature_view(views), mentions=["feature_views", _repr(views)]
    )
    if not isinstance(views, str):  # a string is a (templated) comma-separated list for the operator
        call = lambda: FeastMaterializeOperator(task_id="m", feature_views=views)  # noqa: E731
        expect_clear("FeastMaterializeOperator views", views, call, mentions=["feature_views"])


def test_backfill_chunks_end_near_datetime_max():
    # regression: cursor + chunk passed datetime.max (OverflowError) although the window ends before it
    start, end = datetime(9999, 12, 31, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, tzinfo=timezone.utc)
    assert backfill_chunks(start, end, chunk=timedelta(days=2)) == [
        {"start_date": start.isoformat(), "end_date": end.isoformat(), "newer_wins": True}
    ]


@_settings(60)
@given(
    span_days=st.integers(30, 3650),
    chunk=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(seconds=20)),
)
@example(span_days=90, chunk=timedelta(microseconds=1)).via("regression: 7.8e12 windows were listed (a hang)")
def test_backfill_chunks_refuse_too_many_chunks(span_days, chunk):
    _ran()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(days=span_days)
    call = lambda: backfill_chunks(start, end, chunk=chunk)  # noqa: E731
    expect_clear("backfill_chunks count", (span_days, chunk), call, mentions=["chunk", _repr(chunk)])


@_settings(100)
@given(
    start=bad.aware,
    span=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=90)),
    chunk=st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=400)),
    views=st.one_of(st.none(), st.lists(st.text("abcdef", min_size=1, max_size=5), min_size=1, max_size=3)),
)
def test_backfill_chunks_cover_the_window_exactly(start, span, chunk, views):
    _ran()
    end = start + span
    items = backfill_chunks(start.isoformat(), end, chunk=chunk, feature_views=views)
    windows = sorted(
        {(datetime.fromisoformat(i["start_date"]), datetime.fromisoformat(i["end_date"])) for i in items}
    )
    assert windows[0][0] == start
    assert windows[-1][1] == end
    assert all(lo < hi <= lo + chunk for lo, hi in windows)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(i["newer_wins"] is True for i in items)
    assert len(items) == len(windows) * (1 if views is None else len(views))
    assert resolve_window(start.isoformat(), end.isoformat(), {}, now=NOW) == (start, end)


@_settings(150)
@given(staleness=bad.bad_staleness)
@example(staleness=math.nan).via("regression: 'cannot convert float NaN to integer' named no argument")
@example(staleness=timedelta.max).via("regression: OverflowError when the trigger rebuilt the timedelta")
@example(staleness=math.inf).via("regression: OverflowError from timedelta(seconds=inf)")
def test_freshness_sensor_refuses_a_bad_max_staleness(staleness):
    _ran()
    call = lambda: FeastFeatureFreshnessSensor(task_id="s", feature_view="fv", max_staleness=staleness)  # noqa: E731
    expect_clear("sensor max_staleness", staleness, call, mentions=["max_staleness", _repr(staleness)])


@_settings(60)
@given(view=st.one_of(bad.whitespace, st.integers(), st.none(), st.lists(st.text(max_size=2), max_size=1)))
def test_freshness_sensor_refuses_a_bad_feature_view(view):
    _ran()
    call = lambda: FeastFeatureFreshnessSensor(task_id="s", feature_view=view, max_staleness=60)  # noqa: E731
    expect_clear("sensor feature_view", view, call, mentions=["feature_view", _repr(view)])


@_settings(100)
@given(
    staleness=st.one_of(
        st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=999_999_990)),
        st.integers(1, 10**13),
        st.floats(1e-6, 1e13),
    )
)
def test_freshness_thresholds_survive_the_trip_to_the_triggerer(staleness):
    _ran()
    sensor = FeastFeatureFreshnessSensor(task_id="s", feature_view="fv", max_staleness=staleness)
    trigger = FeastFeatureFreshnessTrigger(
        feast_conn_id="feast_default",
        feature_view="fv",
        max_staleness_seconds=sensor.max_staleness.total_seconds(),
    )
    path, kwargs = trigger.serialize()
    rebuilt = FeastFeatureFreshnessTrigger(**json.loads(json.dumps(kwargs)))
    again = timedelta(seconds=rebuilt.max_staleness_seconds)  # what the trigger's check builds
    assert abs(again - sensor.max_staleness) <= timedelta(milliseconds=1) + sensor.max_staleness * 1e-12
    assert path == "airflow_mlops_provider.triggers.feast.FeastFeatureFreshnessTrigger"


@_settings(120)
@given(arg=bad.bad_operator_args)
@example(arg=("asset_alias", 5)).via("regression: ValueError from inside Airflow's AssetAlias")
def test_materialize_operators_refuse_bad_arguments(arg):
    _ran()
    name, value = arg
    call = lambda: FeastMaterializeOperator(task_id="m", **{name: value})  # noqa: E731
    expect_clear(f"FeastMaterializeOperator {name}", value, call, mentions=[name, _repr(value)[:200]])
    if name != "newer_wins":
        call = lambda: FeastMaterializeIncrementalOperator(task_id="m", **{name: value})  # noqa: E731
        expect_clear(f"FeastMaterializeIncrementalOperator {name}", value, call, mentions=[name])


@_settings(60)
@given(
    timeout=st.one_of(
        st.integers(max_value=-1),
        st.floats(max_value=-1e-9),
        bad.non_finite,
        bad.beyond_float,
        st.booleans(),
        bad.short_text,
        st.none(),
    )
)
@example(timeout="60").via("regression: accepted, then a TypeError when the lock was first taken")
def test_feast_hook_refuses_a_bad_lock_timeout(timeout):
    _ran()
    call = lambda: FeastHook("feast_default", lock_timeout=timeout)  # noqa: E731
    expect_clear("FeastHook lock_timeout", timeout, call, mentions=["lock_timeout", _repr(timeout)])


@_settings(40)
@given(groups=st.one_of(st.integers(max_value=0), st.booleans(), st.floats(allow_nan=True), bad.short_text))
def test_per_feature_view_refuses_bad_groups(groups):
    _ran()
    call = lambda: per_feature_view(["a", "b"], groups=groups)  # noqa: E731
    expect_clear("per_feature_view groups", groups, call, mentions=["groups", _repr(groups)])


# --- the count ----------------------------------------------------------------------------------


def test_bad_inputs_summary(capsys):
    """Print ``bad inputs: N generated, M unclear``; first run the properties this process skipped."""
    module = sys.modules[__name__]
    for name in sorted(vars(module)):
        func = getattr(module, name)
        if name.startswith("test_") and hasattr(func, "hypothesis") and name not in RAN:
            func()
    line = f"bad inputs: {len(BAD_INPUTS)} generated, {len(UNCLEAR)} unclear"
    with capsys.disabled():
        print(f"\n{line}")
        for entry in list(UNCLEAR.values())[:20]:
            print(f"  {entry}")
    assert len(BAD_INPUTS) >= 1000, line
    assert not UNCLEAR, line
