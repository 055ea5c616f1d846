"""Pack trials into batches so a sweep never maps more task instances than Airflow allows.

``.expand()`` fails when an upstream returns more than ``[core] max_map_length`` items (1024 by
default), and thousands of mapped task instances slow the scheduler down. :func:`batch_trials`
packs the trials into at most ``min(max_map_length, max_parallel_tasks)`` batches; each mapped
task then runs one batch, and :func:`flatten_results` joins the per-batch result lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["batch_trials", "flatten_results", "live_max_map_length", "materialized"]


def live_max_map_length() -> int:
    """Return the ``[core] max_map_length`` in effect now (read at call time, not at import)."""
    try:
        from airflow.sdk import conf
    except ImportError:  # pragma: no cover - older Airflow
        from airflow.configuration import conf  # type: ignore[no-redef,assignment]
    return conf.getint("core", "max_map_length", fallback=1024)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def batch_trials(
    trials: Sequence[Mapping[str, Any]],
    *,
    max_parallel_tasks: int | None = None,
    max_map_length: int | None = None,
) -> list[dict[str, list[dict[str, Any]]]]:
    """
    Return ``[{"trials": [...]}, ...]``: one entry per mapped task, for ``.expand_kwargs()``.

    With no more trials than the limit, each batch holds one trial. Otherwise the trials are cut
    into ``limit`` contiguous batches whose sizes differ by at most one.

    :param trials: The trials, as returned by ``trials_from_grid``/``trials_from_random``.
    :param max_parallel_tasks: Most mapped task instances wanted (optional).
    :param max_map_length: The Airflow limit; defaults to the live ``[core] max_map_length``.
    """
    if isinstance(trials, (str, bytes, Mapping)) or not isinstance(trials, Sequence):
        raise ValueError(f"trials must be a list of trial dicts, got {trials!r}")
    if not trials:
        raise ValueError(f"trials must not be empty, got {trials!r}")
    odd = next((t for t in trials if not isinstance(t, Mapping)), None)
    if odd is not None:
        raise ValueError(f"trials must be a list of trial dicts, got {odd!r} among them")
    limit = _positive_int(
        "max_map_length", live_max_map_length() if max_map_length is None else max_map_length
    )
    if max_parallel_tasks is not None:
        limit = min(limit, _positive_int("max_parallel_tasks", max_parallel_tasks))
    n_batches = min(len(trials), limit)
    size, extra = divmod(len(trials), n_batches)
    batches = []
    start = 0
    for index in range(n_batches):
        stop = start + size + (1 if index < extra else 0)
        batches.append({"trials": [dict(t) for t in trials[start:stop]]})
        start = stop
    return batches


def flatten_results(results: Iterable[Any]) -> list[dict[str, Any]]:
    """
    Return one flat list of trial records from per-batch lists (a mapped task's output).

    Accepts a flat list of records too. ``None`` entries (a mapped task that returned nothing)
    are skipped.
    """
    if isinstance(results, (str, bytes, Mapping)):
        raise ValueError(f"results must be a list of trial records or of lists of them, got {results!r}")
    flat: list[dict[str, Any]] = []
    for item in results:
        if item is None:
            continue
        if isinstance(item, Mapping):
            flat.append(dict(item))
        elif isinstance(item, (list, tuple)):
            for record in item:
                if not isinstance(record, Mapping):
                    raise ValueError(f"results must hold trial records (dicts), got {record!r}")
                flat.append(dict(record))
        else:
            raise ValueError(f"results must hold trial records or lists of them, got {item!r}")
    return flat


def materialized(results: Any) -> list[Any]:
    """
    Return a mapped task's output as a list, read in one request.

    Airflow hands a downstream task a lazy sequence of the mapped task's XComs; iterating it
    asks for one item at a time and logs an "XCom not found" error past the last one. A slice
    reads them all at once.
    """
    if results is None:
        return []
    if isinstance(results, (list, tuple)):
        return list(results)
    try:
        return list(results[:])
    except TypeError:
        return list(results)
