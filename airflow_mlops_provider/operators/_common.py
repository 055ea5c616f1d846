"""What the Docker and Kubernetes runtimes share: the argument vocabulary and the result contract.

Both ``GpuDockerOperator`` and ``GpuKubernetesPodOperator`` accept ``image``, ``command``,
``env`` and ``resources`` and mean the same thing by them. Static values are validated when the
DAG file is parsed (``ValueError``); templated values are validated after rendering, at the
start of ``execute`` (``AirflowFailException``: a configuration error is not retried).

The result contract is KubernetesPodOperator's: the container writes one JSON document to
``/airflow/xcom/return.json`` and the operator returns it as the task's XCom.

``BaseOperator`` already owns an attribute called ``resources`` (Airflow's executor resources),
so the operators keep our value in ``compute_resources``; users still pass ``resources=``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import Resources

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Directory the container writes its result into (the same path as KubernetesPodOperator's).
RESULT_DIR = "/airflow/xcom"
#: The JSON document a container writes; the operator returns it as the task's XCom.
RESULT_FILE = f"{RESULT_DIR}/return.json"

T = TypeVar("T")

_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")


def contains_template(value: Any) -> bool:
    """True when ``value`` (or anything inside it) still holds a Jinja expression."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(contains_template(k) or contains_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(contains_template(v) for v in value)
    # An XComArg or a MappedArgument is resolved at run time.
    return type(value).__name__ in {"PlainXComArg", "XComArg", "MapXComArg", "ZipXComArg"}


def _is_deferred_value(value: Any) -> bool:
    return contains_template(value) or hasattr(value, "resolve")


def rendered(argument: str, check: Callable[[Any], T], value: Any) -> T:
    """
    Return ``check(value)`` for a value after rendering; a ``ValueError`` becomes a configuration error.

    The parse-time check of a static value and the run-time check of a rendered one are the same
    function, so the two messages say the same thing; at run time they are wrapped as
    ``ContainerConfigError`` ("Invalid <argument> after rendering: ..."), never retried.
    """
    try:
        return check(value)
    except ValueError as err:
        from airflow_mlops_provider.exceptions import ContainerConfigError

        raise ContainerConfigError(argument, str(err)) from err


def merge_env(env: Mapping[str, Any] | None, native: Mapping[str, Any] | None) -> dict[str, str]:
    """
    Return the native environment with ``env`` laid over it, every value a string.

    The precedence rule of every runtime: ``env`` wins over the runtime's own argument
    (``environment`` on Docker, ``env_vars`` on Kubernetes, the worker's environment locally).
    """
    return {**env_as_strings(native), **env_as_strings(env)}


def reject_clash(ours: str, ours_value: Any, native: str, native_value: Any) -> None:
    """
    Raise ``ValueError`` when one of our arguments and a native one both set the same thing.

    The rule of every runtime: ``resources`` against ``mem_limit``/``container_resources``,
    ``command`` against ``arguments``, ... are errors, never silently resolved.
    """
    if ours_value is None or native_value is None or native_value in ((), [], {}, ""):
        return
    raise ValueError(
        f"{ours} and {native} both set the same thing; pass only one, "
        f"got {ours}={ours_value!r} and {native}={native_value!r}"
    )


def parse_result_text(text: str, *, source: str) -> Any:
    """
    Return the JSON document a container wrote to its result file.

    :param text: The file's content.
    :param source: Who wrote it, for the message (``"Container mlops-train-..."``).
    :raises ResultFileError: when ``text`` is not JSON (the same on every runtime).
    """
    import json

    try:
        return json.loads(text)
    except ValueError as err:
        from airflow_mlops_provider.exceptions import ResultFileError

        raise ResultFileError(
            f"{source} wrote {RESULT_FILE} that is not JSON: {err}; first bytes: {text[:200]!r}"
        ) from err


def resources_for_init(value: Any) -> Any:
    """
    Validate ``resources`` at DAG parse time when it is static; keep templates as they are.

    :raises ValueError: naming the bad field and value.
    """
    if value is None or _is_deferred_value(value):
        return value
    return Resources.coerce(value)


def resources_for_execute(value: Any) -> Resources:
    """
    Return rendered ``resources`` as ``Resources``.

    :raises AirflowFailException: when the rendered value is invalid (no retry).
    """
    try:
        return Resources.coerce(value)
    except ValueError as err:
        raise AirflowFailException(f"Invalid resources after rendering: {err}") from err


def validate_image(image: Any) -> None:
    """Raise ``ValueError`` unless ``image`` is a non-empty string (or a template)."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"image must be a non-empty image reference such as 'python:3.11', got {image!r}")


def validate_command(command: Any) -> None:
    """Raise ``ValueError`` unless ``command`` is None, a string, or a list of strings."""
    if command is None or isinstance(command, str) or _is_deferred_value(command):
        return
    if isinstance(command, Sequence) and all(
        isinstance(part, (str, int, float)) and not isinstance(part, bool) for part in command
    ):
        return
    raise ValueError(f"command must be a string or a list of strings, got {command!r}")


def validate_env(env: Any) -> None:
    """Raise ``ValueError`` unless ``env`` is None or a mapping with string keys."""
    if env is None or (_is_deferred_value(env) and not isinstance(env, Mapping)):
        return
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a dict of variable names to values, got {env!r}")
    bad = [k for k in env if not isinstance(k, str) or not k or "=" in k]
    if bad:
        raise ValueError(f"env keys must be non-empty strings without '=', got {bad!r} in env")


def env_as_strings(env: Mapping[str, Any] | None) -> dict[str, str]:
    """Return ``env`` with every value as a string (what both runtimes pass to the process)."""
    if not env:
        return {}
    if not isinstance(env, Mapping):
        raise AirflowFailException(f"env must render to a dict, got {env!r}")
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def task_identity(context: Context) -> dict[str, str]:
    """Return the identity of the running task instance: dag, task, run, map index and try."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(-1 if map_index is None else map_index),
        "try_number": str(getattr(ti, "try_number", 1) or 1),
    }


def deterministic_name(identity: Mapping[str, str], *, prefix: str = "mlops", max_length: int = 63) -> str:
    """
    Return a name that is the same on every try of one task instance and distinct between them.

    Built from dag_id, task_id, run_id and map_index (not the try number, so a retry finds the
    container its previous try started). Readable parts are kept where they fit; a hash of the
    full identity keeps the name unique when they are truncated.
    """
    key = "\x1f".join(identity[k] for k in ("dag_id", "task_id", "run_id", "map_index"))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = _NAME_UNSAFE.sub("-", f"{identity['dag_id']}-{identity['task_id']}".lower()).strip("-")
    map_index = identity["map_index"]
    suffix = f"-{digest}" if map_index in ("-1", "") else f"-{map_index}-{digest}"
    room = max_length - len(prefix) - 1 - len(suffix)
    readable = readable[: max(room, 0)].strip("-")
    return f"{prefix}-{readable}{suffix}" if readable else f"{prefix}{suffix}"


def plain_resources_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return ``kwargs`` with a ``Resources`` under ``resources`` replaced by its dict."""
    value = kwargs.get("resources")
    if isinstance(value, Resources):
        return {**kwargs, "resources": value.to_dict()}
    return kwargs


class ResourcesPartialMixin:
    """
    Lets ``.partial(resources=Resources(...))`` work on our operators.

    ``resources`` is also the name of BaseOperator's own argument, and Airflow deserialises a
    non-dict ``resources`` in ``partial()`` as its executor ``Resources``, which fails when the
    scheduler loads the DAG. A ``Resources`` given to ``partial()`` therefore travels as its dict.

    Each subclass's ``__init__`` signature is computed once, when the class is created, and kept
    on the function: Airflow's ``partial()`` reads the signature of every ``__init__`` in the
    class's MRO on each call, which otherwise costs the DAG processor ~0.05 ms per class per
    mapped task on every parse.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and getattr(init, "__signature__", None) is None:
            init.__signature__ = inspect.signature(init)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        return super().partial(**plain_resources_kwargs(kwargs))  # type: ignore[misc]
