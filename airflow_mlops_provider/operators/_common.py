"""The container contract every runtime (Docker, Kubernetes, local) implements the same way.

``GpuDockerOperator``, ``GpuKubernetesPodOperator`` and ``LocalProcessOperator`` accept
``image``, ``command``, ``env``, ``resources`` and ``return_result_file`` and mean the same
thing by them; the rules below are written once, here, and checked by one parity test
(``tests/integration/parity``):

- **Validation.** Static values are checked when the DAG file is parsed (``ValueError``);
  templated values after rendering, at the start of ``execute``, by the same check, through
  :func:`rendered`: ``ContainerConfigError`` ("Invalid <argument> after rendering: <the
  parse-time text>"), an ``AirflowFailException``, so a configuration error is not retried.
- **Precedence.** ``env`` wins over the runtime's own argument (``environment`` on Docker,
  ``env_vars`` on Kubernetes, the worker's environment locally): :func:`merge_env`. The names
  it took over are logged at INFO (never the values).
- **Clashes.** One of our arguments and a native one that set the same thing (``resources``
  and ``container_resources``, ``command`` and ``arguments``, ...) are a parse-time
  ``ValueError`` from :func:`reject_clash`, never silently resolved.
- **Result file.** The process finds the path in ``$MLOPS_RESULT_FILE`` (containers:
  ``/airflow/xcom/return.json``, KubernetesPodOperator's path; local: a private temporary
  file). Present: its JSON is the task's XCom; missing: ``None``; not JSON:
  ``ResultFileError`` from :func:`parse_result_text`.
- **Exit code.** A non-zero exit is a ``ContainerFailedError`` carrying the exit code and the
  last output lines: :func:`container_failed_error`.

``BaseOperator`` already owns an attribute called ``resources`` (Airflow's executor resources),
so the operators keep our value in ``compute_resources``; users still pass ``resources=``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import Resources

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops_provider.exceptions import ContainerFailedError

#: Directory the container writes its result into (the same path as KubernetesPodOperator's).
RESULT_DIR = "/airflow/xcom"
#: The JSON document a container writes; the operator returns it as the task's XCom.
RESULT_FILE = f"{RESULT_DIR}/return.json"
#: The variable every runtime sets to the result file's path, so one trainer works everywhere.
RESULT_FILE_ENV = "MLOPS_RESULT_FILE"
#: How many of the last output lines a ``ContainerFailedError`` of a container carries.
ERROR_TAIL_LINES = 20

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


def merge_env(
    env: Mapping[str, Any] | None,
    native: Mapping[str, Any] | None,
    *,
    native_name: str = "the native environment",
    log: Any = None,
) -> dict[str, str]:
    """
    Return the native environment with ``env`` laid over it, every value a string.

    The precedence rule of every runtime: ``env`` wins over the runtime's own argument
    (``environment`` on Docker, ``env_vars`` on Kubernetes, the worker's environment locally).

    :param env: Our ``env`` (rendered).
    :param native: The runtime's own environment argument (rendered).
    :param native_name: What ``native`` is called, for the log line.
    :param log: Where to log the names ``env`` took over (INFO); None logs nothing.
    """
    ours = env_as_strings(env)
    merged = env_as_strings(native)
    log_env_overrides(log, [name for name in ours if name in merged], native_name)
    merged.update(ours)
    return merged


def log_env_overrides(log: Any, names: Iterable[str], native_name: str) -> None:
    """Log at INFO the variable names (never the values) that ``env`` took over from ``native_name``."""
    overridden = sorted(set(names))
    if overridden and log is not None:
        log.info("env overrides %s given in %s", overridden, native_name)


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
            f"{source} wrote a result file (${RESULT_FILE_ENV}) that is not JSON: {err}; "
            f"first bytes: {text[:200]!r}"
        ) from err


def container_failed_error(
    source: str, exit_code: int | None, lines: Iterable[str], *, oom_killed: bool | None = None
) -> ContainerFailedError:
    """
    Return the error of a process that exited with a non-zero code (the same shape on every runtime).

    :param source: What ran, for the message (``"Container mlops-train-..."``, ``"Pod train-..."``).
    :param exit_code: Its exit code.
    :param lines: Its last output lines (already cut to the tail).
    :param oom_killed: Whether the runtime reports an out-of-memory kill (None: it does not say).
    """
    from airflow_mlops_provider.exceptions import ContainerFailedError

    message = f"{source} exited with code {exit_code}"
    if oom_killed:
        message += " (OOM-killed: it ran out of memory)"
    return ContainerFailedError(message, exit_code=exit_code, logs="\n".join(lines), oom_killed=oom_killed)


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

    :raises ContainerConfigError: when the rendered value is invalid (an ``AirflowFailException``: no retry).
    """
    return rendered("resources", Resources.coerce, value)


def check_image(image: Any) -> str:
    """Return ``image``; raise ``ValueError`` unless it is a non-empty string."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"image must be a non-empty image reference such as 'python:3.11', got {image!r}")
    return image


def validate_image(image: Any) -> None:
    """Raise ``ValueError`` unless ``image`` is a non-empty string (or a template)."""
    check_image(image)


def check_command(command: Any) -> str | list[Any] | None:
    """Return ``command``; raise ``ValueError`` unless it is None, a string, or a list of strings."""
    if command is None or isinstance(command, str):
        return command
    if isinstance(command, Sequence) and all(
        isinstance(part, (str, int, float)) and not isinstance(part, bool) for part in command
    ):
        return list(command)
    raise ValueError(f"command must be a string or a list of strings, got {command!r}")


def validate_command(command: Any) -> None:
    """Raise ``ValueError`` unless ``command`` is None, a string, or a list of strings (or a template)."""
    if not _is_deferred_value(command):
        check_command(command)


def check_env(env: Any) -> dict[str, str]:
    """Return ``env`` with string values; raise ``ValueError`` unless it is None or a dict of names."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a dict of variable names to values, got {env!r}")
    bad = [k for k in env if not isinstance(k, str) or not k or "=" in k]
    if bad:
        raise ValueError(f"env keys must be non-empty strings without '=', got {bad!r} in env")
    return env_as_strings(env)


def validate_env(env: Any) -> None:
    """Raise ``ValueError`` unless ``env`` is None or a mapping with string keys (or a template)."""
    if env is None or (_is_deferred_value(env) and not isinstance(env, Mapping)):
        return
    check_env(env)


def rendered_image(value: Any) -> str:
    """Return the rendered ``image``; raise ``ContainerConfigError`` when it is not an image reference."""
    return rendered("image", check_image, value)


def rendered_command(value: Any) -> str | list[Any] | None:
    """Return the rendered ``command``; raise ``ContainerConfigError`` when it is not a string or list."""
    return rendered("command", check_command, value)


def rendered_env(value: Any) -> dict[str, str]:
    """Return the rendered ``env`` with string values; raise ``ContainerConfigError`` when it is not a dict."""
    return rendered("env", check_env, value)


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
