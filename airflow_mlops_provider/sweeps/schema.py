"""The JSON Schema of a search space: the one definition of what a valid space is.

The trigger form's ``search_space`` Param carries :data:`SEARCH_SPACE_SCHEMA`: Airflow checks a
run's conf against it with jsonschema and answers a violation with jsonschema's own message
(``'gaussian' is not one of ['choice', 'float', 'int']``). :func:`check_search_space` applies the
same rules when a sweep is planned or a DAG parsed, and answers with the message the failing rule
carries under ``x-error`` (a template, or one template per keyword), which names the entry and
repeats the value: ``search_space['lr']: a log range needs low > 0, got low=0.0``.

Two things JSON Schema cannot say are left to :mod:`airflow_mlops_provider.sweeps.space`:
``low <= high``, and what a ``resources`` dict may hold (that is
:class:`~airflow_mlops_provider.compute.Resources`' job). A range without ``distribution`` is an
int range when both bounds are integers; JSON Schema cannot tell ``2`` from ``2.0``, so the
trigger form checks such a range as a float range and the planner, which fills in the inferred
distribution before validating, applies the integer rules.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = [
    "DIMENSION_KEYS",
    "DISTRIBUTIONS",
    "RESOURCES_KEY",
    "SEARCH_SPACE_SCHEMA",
    "check_search_space",
]

#: The distributions a search-space entry may name.
DISTRIBUTIONS = ("choice", "float", "int")
#: The keys of a search-space entry given as a dict.
DIMENSION_KEYS = ("distribution", "values", "low", "high", "step", "num", "log")
#: The reserved search-space key holding per-trial compute resources.
RESOURCES_KEY = "resources"

_RANGE_KEYS = [key for key in DIMENSION_KEYS if key not in ("distribution", "values")]
_X = "x-error"  # the message of a rule: a template, or {keyword: template}
_VALUES = "{where}: a choice needs a non-empty list of 'values', got {value!r}"


def _bounds(kind: str, expected: str, step: dict[str, Any], step_expected: str) -> dict[str, Any]:
    def bound(name: str) -> dict[str, Any]:
        return {"type": kind, _X: f"{{where}}: {name} must be {expected}, got {{value!r}}"}

    return {
        "required": ["low", "high"],
        _X: f"{{where}}: {{missing}} must be {expected}, got None",
        "properties": {
            "low": bound("low"),
            "high": bound("high"),
            "step": {**step, _X: f"{{where}}: step must be {step_expected}, got {{value!r}}"},
        },
    }


_IS_CHOICE = {
    "anyOf": [
        {"properties": {"distribution": {"const": "choice"}}, "required": ["distribution"]},
        {"required": ["values"], "not": {"required": ["distribution"]}},
    ]
}

_CHOICE = {
    "required": ["values"],
    _X: "{where}: a choice needs a non-empty list of 'values', got {values!r}",
    "properties": {"values": {"type": "array", "minItems": 1, _X: _VALUES}},
    "propertyNames": {
        "not": {"enum": _RANGE_KEYS},
        _X: "{where}: a choice takes only 'values', got also {unexpected}",
    },
}

_RANGE = {
    "propertyNames": {
        "not": {"const": "values"},
        _X: "{where}: 'values' belongs to a choice, not to a {distribution} range",
    },
    "if": {"properties": {"distribution": {"const": "int"}}, "required": ["distribution"]},
    "then": _bounds("integer", "an integer", {"type": "integer", "minimum": 1}, "an integer >= 1"),
    "else": _bounds("number", "a finite number", {"type": "number", "exclusiveMinimum": 0}, "a number > 0"),
    "properties": {
        "log": {"type": "boolean", _X: "{where}: log must be true or false, got {value!r}"},
        "num": {"type": "integer", "minimum": 1, _X: "{where}: num must be an integer >= 1, got {value!r}"},
    },
    "allOf": [
        {
            "if": {"properties": {"log": {"const": True}}, "required": ["log"]},
            "then": {
                "properties": {
                    "low": {
                        "exclusiveMinimum": 0,
                        _X: "{where}: a log range needs low > 0, got low={value!r}",
                    }
                },
                "not": {"required": ["step"]},
                _X: "{where}: step cannot be combined with log=true, got step={step!r}",
            },
        },
        {
            "not": {"required": ["num", "step"]},
            _X: "{where}: give 'num' or 'step', not both, got num={num!r}, step={step!r}",
        },
    ],
}

_DIMENSION = {
    "additionalProperties": False,
    _X: f"{{where}} has unknown key(s) {{unexpected}}; expected some of {list(DIMENSION_KEYS)}, got {{spec!r}}",
    "properties": {
        "distribution": {
            "enum": list(DISTRIBUTIONS),
            _X: f"{{where}}: unknown distribution {{value!r}}; expected one of {list(DISTRIBUTIONS)}",
        },
        **{key: {} for key in DIMENSION_KEYS if key != "distribution"},  # known; checked below
    },
    "if": _IS_CHOICE,
    "then": _CHOICE,
    "else": _RANGE,
}

_ENTRY = {
    "if": {"type": "object"},
    "then": _DIMENSION,
    "else": {"if": {"type": "array"}, "then": {"minItems": 1, _X: _VALUES}},
}

_RESOURCES_ENTRY = {
    "type": ["object", "array"],
    _X: "{where} must be a resources dict or a list of them, got {value!r}",
    "if": {"type": "array"},
    "then": {"minItems": 1, _X: _VALUES},
    "else": {"if": _IS_CHOICE, "then": _CHOICE},
}

_RULES: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    _X: {
        "type": "search_space must be a mapping of parameter name to values or a range, got {space!r}",
        "minProperties": "search_space must define at least one parameter, got {space!r}",
    },
    "propertyNames": {
        "type": "string",
        "minLength": 1,
        _X: "search_space parameter names must be non-empty strings, got {value!r}",
    },
    "properties": {RESOURCES_KEY: _RESOURCES_ENTRY},
    "additionalProperties": _ENTRY,
}


def _without_messages(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_messages(value) for key, value in schema.items() if key != _X}
    if isinstance(schema, list):
        return [_without_messages(item) for item in schema]
    return schema


#: JSON Schema of a search space, as the trigger form's Param carries it (the rules without
#: their ``x-error`` messages).
SEARCH_SPACE_SCHEMA: dict[str, Any] = _without_messages(_RULES)


@functools.cache
def _validator() -> Any:
    # Python values, not only JSON: a tuple is an array, any Mapping an object, a bool is never
    # a number, an integer is an int (2.0 is not), and a number is finite.
    import jsonschema

    base = jsonschema.Draft202012Validator

    def is_number(_: Any, value: Any) -> bool:
        # An int is finite (math.isfinite overflows on one too large for a float).
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (isinstance(value, int) or math.isfinite(value))
        )

    checker = base.TYPE_CHECKER.redefine_many(
        {
            "array": lambda _, value: isinstance(value, (list, tuple)),
            "object": lambda _, value: isinstance(value, Mapping),
            "integer": lambda _, value: isinstance(value, int) and not isinstance(value, bool),
            "number": is_number,
        }
    )
    return jsonschema.validators.extend(base, type_checker=checker)(_RULES)


def _inferred_distribution(spec: Mapping[str, Any]) -> str:
    if "values" in spec:
        return "choice"
    bounds = (spec.get("low"), spec.get("high"))
    if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return "int"
    return "float"


def _message(error: ValidationError, given: Any, space: Any, entries: Any) -> str:
    """
    Return the ``x-error`` message of the rule ``error`` broke, filled in from the entry.

    :param error: The first violation.
    :param given: The space as the caller gave it (JSON text stays text in the message).
    :param space: The space as a mapping, as given.
    :param entries: The space with each dict entry's inferred distribution filled in.
    """
    template = error.schema.get(_X) if isinstance(error.schema, dict) else None
    if isinstance(template, dict):
        template = template.get(error.validator)
    name = error.path[0] if error.path else None
    where = "search_space" if name is None else f"search_space[{name!r}]"
    if template is None:
        return f"{where}: {error.message}"
    spec = entries.get(name) if name is not None else None
    fields = {key: spec.get(key) for key in DIMENSION_KEYS} if isinstance(spec, Mapping) else {}
    unexpected: list[Any] = []
    if error.validator == "additionalProperties":
        unexpected = sorted((key for key in error.instance if key not in error.schema["properties"]), key=str)
    elif error.validator == "not" and isinstance(spec, Mapping) and "enum" in error.validator_value:
        unexpected = sorted((key for key in spec if key in error.validator_value["enum"]), key=str)
    missing = None
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
    return template.format(
        **fields,
        where=where,
        value=error.instance,
        space=given,
        spec=space.get(name) if name is not None else None,
        missing=missing,
        unexpected=unexpected,
    )


def check_search_space(search_space: Mapping[str, Any] | str) -> dict[str, Any]:
    """
    Validate ``search_space`` against the schema; return it with each dict entry's distribution.

    :param search_space: The space as a mapping, or its JSON text.
    :raises ValueError: the first rule the space breaks, naming the entry and repeating the value.
    """
    space: Any = search_space
    if isinstance(space, str):
        try:
            space = json.loads(space)
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
            raise ValueError(f"search_space must be a JSON object, got {search_space!r}") from err
    entries: Any = space
    if isinstance(space, Mapping):
        entries = {
            name: (
                {**spec, "distribution": _inferred_distribution(spec)}
                if isinstance(spec, Mapping) and "distribution" not in spec and name != RESOURCES_KEY
                else spec
            )
            for name, spec in space.items()
        }
    error = next(iter(_validator().iter_errors(entries)), None)
    if error is not None:
        raise ValueError(_message(error, search_space, space, entries))
    return entries
