"""MLflow model registry operators: register a version, set an alias, promote a challenger.

Aliases replace MLflow's deprecated stages. Every new version and every alias move emits an
Airflow Asset event for the model (``mlflow-model://<name>``, see
:mod:`airflow_mlops_provider.assets.mlflow`), so a deployment DAG can be scheduled on it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.assets.mlflow import (
    mlflow_model_asset,
    mlflow_model_events_alias,
    mlflow_model_uri,
)
from airflow_mlops_provider.exceptions import ModelRegistryError
from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.links.mlflow import MlflowModelVersionLink, MlflowRunLink, push_mlflow_urls
from airflow_mlops_provider.operators._common import contains_template

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Version tag holding a hash of the task instance identity (dag_id, task_id, run_id, map_index).
TI_KEY_TAG = "airflow.ti_key"
#: Prefix of the decision tags MlflowPromoteModelOperator writes on the challenger version.
PROMOTION_TAG_PREFIX = "airflow.promotion."
MODES = ("max", "min")


def ti_identity_tags(context: Context) -> dict[str, str]:
    """Tags naming the task instance that registers a version (the idempotency key)."""
    ti = context["ti"]
    ident = {
        "airflow.dag_id": str(ti.dag_id),
        "airflow.task_id": str(ti.task_id),
        "airflow.run_id": str(ti.run_id),
        "airflow.map_index": str(ti.map_index if ti.map_index is not None else -1),
    }
    digest = hashlib.sha256("\x1f".join(ident.values()).encode()).hexdigest()
    return {**ident, TI_KEY_TAG: digest}


def positive_version(value: Any, *, name: str, error: type[Exception]) -> int:
    """Return ``value`` as a model version number (>= 1), or raise ``error`` naming ``name``."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise error(f"{name} must be a positive model version, got {value!r}")
    return number


def compare_metrics(
    challenger: float, champion: float | None, *, mode: str, min_delta: float
) -> tuple[bool, float | None]:
    """
    Decide whether the challenger beats the champion.

    :return: ``(promote, delta)``; ``delta`` is the improvement (positive is better in both
        modes), ``None`` without a champion. Promote when there is no champion or when the
        improvement is strictly greater than ``min_delta`` (beyond float rounding).
    """
    if champion is None:
        return True, None
    delta = challenger - champion if mode == "max" else champion - challenger
    # An improvement equal to min_delta up to float rounding (0.805 - 0.8) does not promote.
    return delta > min_delta and not math.isclose(delta, min_delta, rel_tol=1e-9, abs_tol=1e-12), delta


def parse_min_delta(value: Any, *, error: type[Exception] = ValueError) -> float:
    """
    Return ``min_delta`` as a float >= 0; a number or its text (what a rendered template gives).

    :raises error: naming the value when it is not a finite number >= 0.
    """
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except ValueError:
            pass
    if not (math.isfinite(number) and number >= 0):
        raise error(f"min_delta must be a number >= 0, got {value!r}")
    return number


def _emit_model_event(context: Context, model_name: str, outlets: Sequence[Any], extra: dict) -> None:
    """Add an event on the model's Asset (through the events alias and any matching outlet)."""
    events = context["outlet_events"]
    alias = mlflow_model_events_alias()
    if any(getattr(o, "name", None) == alias.name and type(o).__name__ == "AssetAlias" for o in outlets):
        events[alias].add(mlflow_model_asset(model_name), extra=extra)
    uri = mlflow_model_asset(model_name).uri
    for outlet in outlets:
        if isinstance(outlet, Asset) and outlet.uri == uri:
            events[outlet].extra.update(extra)


class _MlflowRegistryOperator(BaseOperator):
    """Shared set-up of the registry operators (connection, Asset outlets, links)."""

    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(self, *, mlflow_conn_id: str, emit_asset_event: bool, **kwargs: Any) -> None:
        if emit_asset_event:
            outlets = kwargs.get("outlets") or []
            if not isinstance(outlets, (list, tuple)):
                outlets = [outlets]
            kwargs["outlets"] = [*outlets, mlflow_model_events_alias()]
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.emit_asset_event = emit_asset_event

    @cached_property
    def hook(self) -> MlflowHook:
        """The MlflowHook of ``mlflow_conn_id`` (built on first use, at run time)."""
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _required(self, name: str) -> str:
        value = getattr(self, name)
        if value is None or not str(value).strip():
            raise AirflowFailException(f"{name} must be a non-empty string, got {value!r}")
        return str(value).strip()

    def _version(self, name: str) -> str:
        return str(positive_version(getattr(self, name), name=name, error=AirflowFailException))


class MlflowRegisterModelOperator(_MlflowRegistryOperator):
    """
    Register a model version, creating the registered model when it is missing.

    Idempotent: the version is tagged with the task instance's identity (dag_id, task_id, run_id,
    map_index) and looked up before creating, so a retry or rerun returns the version created
    before. Returns ``{"name", "version", "run_id", "source"}``.

    :param model_name: Registered model name. (templated)
    :param source: Model source URI (``models:/m-...``, ``runs:/...``, ``s3://...``). (templated)
    :param run_id: MLflow run that produced the model; with ``artifact_path``, the model logged
        under that name in the run. (templated)
    :param artifact_path: Name the model was logged under in ``run_id``. (templated)
    :param model_id: MLflow 3 logged model id (``m-...``). (templated)
    :param tags: Extra version tags. (templated)
    :param description: Version description. (templated)
    :param alias: Alias to point at the new version, if any. (templated)
    :param await_ready: Wait until the version's status is READY.
    :param await_timeout: Seconds to wait for READY.
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>``.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = (
        "model_name", "source", "run_id", "artifact_path", "model_id", "tags", "description", "alias",
    )  # fmt: skip

    def __init__(
        self,
        *,
        model_name: str,
        source: str | None = None,
        run_id: str | None = None,
        artifact_path: str | None = None,
        model_id: str | None = None,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        await_ready: bool = True,
        await_timeout: float = 300,
        alias: str | None = None,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        if not (isinstance(await_timeout, (int, float)) and await_timeout > 0):
            raise ValueError(f"await_timeout must be a positive number of seconds, got {await_timeout!r}")
        if tags is not None and not isinstance(tags, Mapping) and not contains_template(tags):
            raise ValueError(f"tags must be a mapping, got {tags!r}")
        if source is None and model_id is None and run_id is None:
            raise ValueError("give source, run_id with artifact_path, or model_id; got none of them")
        if run_id is not None and source is None and model_id is None and artifact_path is None:
            raise ValueError(f"run_id={run_id!r} needs artifact_path (or give source or model_id)")
        self.model_name = model_name
        self.source = source
        self.run_id = run_id
        self.artifact_path = artifact_path
        self.model_id = model_id
        self.tags = tags
        self.description = description
        self.await_ready = await_ready
        self.await_timeout = await_timeout
        self.alias = alias

    def _resolve_source(self, client: Any) -> tuple[str, str | None, str | None]:
        """Return ``(source, run_id, model_id)`` to register."""
        run_id = self.run_id or None
        model_id = self.model_id or None
        if self.source:
            source = str(self.source)
            if model_id is None and source.startswith("models:/m-"):
                # MLflow 3 requires the logged model's id next to a models:/<model_id> source.
                model_id = source.removeprefix("models:/").split("/", 1)[0]
            if model_id and run_id is None:
                run_id = client.get_logged_model(model_id).source_run_id
            return source, run_id, model_id
        if model_id:
            if run_id is None:
                run_id = client.get_logged_model(model_id).source_run_id
            return f"models:/{model_id}", run_id, model_id
        run = client.get_run(run_id)
        for output in getattr(run.outputs, "model_outputs", None) or []:
            logged = client.get_logged_model(output.model_id)
            if logged.name == self.artifact_path:
                return f"models:/{logged.model_id}", run_id, logged.model_id
        return f"runs:/{run_id}/{self.artifact_path}", run_id, None

    def execute(self, context: Context) -> dict[str, Any]:
        name = self._required("model_name")
        if self.tags is not None and not isinstance(self.tags, Mapping):
            raise AirflowFailException(f"tags must be a mapping, got {self.tags!r}")
        if self.run_id is not None and not self.source and not self.model_id and not self.artifact_path:
            raise AirflowFailException(f"run_id={self.run_id!r} needs artifact_path")
        client = self.hook.get_conn()
        identity = ti_identity_tags(context)
        ti_key = identity[TI_KEY_TAG]

        # A first try cannot have registered anything yet; a retry or a cleared task looks first.
        try_number = getattr(context["ti"], "try_number", None)
        existing = self._versions_of_ti(client, name, ti_key) if try_number != 1 else []
        created = not existing
        if existing:
            version = existing[0]
            self.log.info("Task instance already registered %s version %s; reusing it", name, version.version)
        else:
            source, run_id, model_id = self._resolve_source(client)
            tags = {**{str(k): str(v) for k, v in (self.tags or {}).items()}, **identity}
            self.log.info("Registering %s from %s", name, source)
            version = self._create_once_per_ti(
                client, name, ti_key, source=source, run_id=run_id, model_id=model_id, tags=tags
            )
        if self.await_ready and version.status != "READY":
            version = self._wait_ready(client, name, str(version.version))
        if self.alias:
            client.set_registered_model_alias(name, str(self.alias), str(version.version))
            self.log.info("Alias %r of %s now points at version %s", self.alias, name, version.version)

        result = {
            "name": name,
            "version": str(version.version),
            "run_id": version.run_id,
            "source": version.source,
        }
        push_mlflow_urls(
            context,
            run_id=version.run_id or "",
            model_version=self.hook.model_version_url(name, version.version),
        )
        if self.emit_asset_event:
            event = {"event": "registered", "created": created, **result}
            event["model_name"] = event.pop("name")
            if self.alias:
                event["alias"] = str(self.alias)
            _emit_model_event(context, name, self.outlets, event)
        return result

    def _create_once_per_ti(
        self, client: Any, name: str, ti_key: str, *, attempts: int = 4, **create: Any
    ) -> Any:
        """
        Create the version with single-attempt requests. When a request gets no answer, the
        server may still have committed it: look the task instance's version up before trying
        again, so a lost response never leaves two versions.
        """
        from mlflow.exceptions import MlflowException, RestException

        created_model = False
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return self.hook.create_model_version_once(name=name, description=self.description, **create)
            except MlflowException as err:
                # An HTTP error, or any error of an embedded (sqlite:, file:) registry, is an answer.
                answered = isinstance(err, RestException) or not self.hook.registry_is_http
                if answered and err.error_code == "RESOURCE_DOES_NOT_EXIST" and not created_model:
                    self._create_registered_model(client, name)
                    created_model = True
                    continue
                if answered:
                    raise ModelRegistryError(
                        f"Could not create a version of {name!r} from {create['source']!r}: {err}",
                        model_name=name,
                    ) from err
                self.log.warning("No answer to create a version of %s (attempt %d): %s", name, attempt, err)
                try:
                    found = self._versions_of_ti(client, name, ti_key)
                except MlflowException as lookup_err:
                    # Creating again could duplicate a committed version: let the task retry look.
                    raise ModelRegistryError(
                        f"Could not create a version of {name!r} from {create['source']!r}: no answer "
                        f"({err}), and looking for a committed version failed too: {lookup_err}",
                        model_name=name,
                    ) from err
                if found:
                    self.log.info("The server had committed it: version %s", found[0].version)
                    return found[0]
                if attempt == attempts:
                    raise ModelRegistryError(
                        f"Could not create a version of {name!r} from {create['source']!r}: {err}",
                        model_name=name,
                    ) from err
                time.sleep(delay)
                delay *= 2
        raise ModelRegistryError(f"Could not create a version of {name!r}", model_name=name)

    def _create_registered_model(self, client: Any, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name)
            self.log.info("Created registered model %s", name)
        except MlflowException as err:  # created meanwhile by another task
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    @staticmethod
    def _versions_of_ti(client: Any, name: str, ti_key: str) -> list[Any]:
        escaped = name.replace("'", "\\'")
        found = client.search_model_versions(f"name = '{escaped}' AND tags.`{TI_KEY_TAG}` = '{ti_key}'")
        return sorted(found, key=lambda v: int(v.version))

    def _wait_ready(self, client: Any, name: str, version: str) -> Any:
        deadline = time.monotonic() + float(self.await_timeout)
        delay = 0.2
        while True:
            current = client.get_model_version(name, version)
            if current.status == "READY":
                return current
            if current.status == "FAILED_REGISTRATION":
                raise ModelRegistryError(
                    f"Version {version} of {name!r} failed registration: {current.status_message}",
                    model_name=name,
                    version=version,
                )
            if time.monotonic() > deadline:
                raise ModelRegistryError(
                    f"Version {version} of {name!r} not READY after {self.await_timeout}s "
                    f"(status {current.status})",
                    model_name=name,
                    version=version,
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class MlflowSetAliasOperator(_MlflowRegistryOperator):
    """
    Point an alias of a registered model at a version.

    Returns ``{"name", "alias", "version", "previous_version"}``.

    :param model_name: Registered model name. (templated)
    :param alias: Alias to set, e.g. ``champion``. (templated)
    :param version: Model version the alias points at. (templated)
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>`` when the alias moves.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "version")

    def __init__(
        self,
        *,
        model_name: str,
        alias: str,
        version: str | int,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        self.model_name = model_name
        self.alias = alias
        self.version = version

    def execute(self, context: Context) -> dict[str, Any]:
        name, alias, version = self._required("model_name"), self._required("alias"), self._version("version")
        client = self.hook.get_conn()
        previous = _alias_version(client, name, alias)
        client.set_registered_model_alias(name, alias, version)
        self.log.info("Alias %r of %s: version %s -> %s", alias, name, previous, version)
        push_mlflow_urls(context, model_version=self.hook.model_version_url(name, version))
        if self.emit_asset_event and previous != version:
            _emit_model_event(
                context,
                name,
                self.outlets,
                {"event": "promoted", "model_name": name, "alias": alias, "version": version,
                 "previous_version": previous},
            )  # fmt: skip
        return {"name": name, "alias": alias, "version": version, "previous_version": previous}


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


class MlflowPromoteModelOperator(_MlflowRegistryOperator):
    """
    Champion/challenger: move an alias to the challenger only if its metric is better.

    The challenger's metric comes from its run (or ``challenger_metric_value``), the champion's
    from the run of the version that holds ``alias``. The alias moves when no version holds it
    yet, or when the challenger improves on the champion by more than ``min_delta``. The decision
    is recorded as ``airflow.promotion.*`` tags on the challenger version, and returned as
    ``{"decision": "promote" | "keep", "promoted", "champion_version", "challenger_version",
    "champion_value", "challenger_value", "delta", ...}`` for a branch task.

    :param model_name: Registered model name. (templated)
    :param challenger_version: The candidate version. (templated)
    :param metric: Run metric to compare, e.g. ``val_auc``. (templated)
    :param mode: ``"max"`` when higher is better, ``"min"`` when lower is better.
    :param alias: The alias to move. (templated)
    :param min_delta: Required improvement (>= 0), in the metric's units; a number, or a
        template such as ``"{{ params.min_delta }}"``. (templated)
    :param challenger_metric_value: Use this value instead of the challenger run's metric. (templated)
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>`` on promotion.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = (
        "model_name", "challenger_version", "metric", "alias", "min_delta", "challenger_metric_value",
    )  # fmt: skip

    def __init__(
        self,
        *,
        model_name: str,
        challenger_version: str | int,
        metric: str,
        mode: str = "max",
        alias: str = "champion",
        min_delta: float | str = 0.0,
        challenger_metric_value: float | str | None = None,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not contains_template(min_delta):
            min_delta = parse_min_delta(min_delta)
        self.model_name = model_name
        self.challenger_version = challenger_version
        self.metric = metric
        self.mode = mode
        self.alias = alias
        self.min_delta = min_delta
        self.challenger_metric_value = challenger_metric_value

    def _metric_of(self, client: Any, name: str, version: str, role: str) -> float:
        mv = client.get_model_version(name, version)
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        if self.metric not in metrics and getattr(mv, "model_id", None):
            logged = client.get_logged_model(mv.model_id)
            metrics = {m.key: m.value for m in (logged.metrics or [])} | metrics
        if self.metric not in metrics:
            raise AirflowFailException(
                f"{role} version {version} of {name!r} has no metric {self.metric!r} "
                f"(run {mv.run_id!r} has {sorted(metrics)})"
            )
        return float(metrics[self.metric])

    def execute(self, context: Context) -> dict[str, Any]:
        name, alias, metric = self._required("model_name"), self._required("alias"), self._required("metric")
        challenger = self._version("challenger_version")
        min_delta = parse_min_delta(self.min_delta, error=AirflowFailException)
        client = self.hook.get_conn()
        if self.challenger_metric_value not in (None, ""):
            try:
                challenger_value = float(self.challenger_metric_value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                challenger_value = math.nan
            if math.isnan(challenger_value):
                raise AirflowFailException(
                    f"challenger_metric_value must be a number, got {self.challenger_metric_value!r}"
                )
        else:
            challenger_value = self._metric_of(client, name, challenger, "challenger")
        champion = _alias_version(client, name, alias)
        delta: float | None
        if champion == challenger:
            champion_value: float | None = challenger_value
            promote, delta = False, 0.0
        else:
            champion_value = self._metric_of(client, name, champion, "champion") if champion else None
            promote, delta = compare_metrics(
                challenger_value, champion_value, mode=self.mode, min_delta=min_delta
            )
        decision = "promote" if promote else "keep"
        tags = {
            "decision": decision,
            "metric": metric,
            "mode": self.mode,
            "alias": alias,
            "min_delta": repr(min_delta),
            "challenger_value": repr(challenger_value),
            "champion_value": "" if champion_value is None else repr(champion_value),
            "champion_version": champion or "",
            "delta": "" if delta is None else repr(delta),
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, challenger, PROMOTION_TAG_PREFIX + key, value)
        if promote:
            client.set_registered_model_alias(name, alias, challenger)
        self.log.info(
            "%s %s: challenger v%s %s=%s vs champion v%s %s (delta %s, min_delta %s) -> %s",
            name, alias, challenger, metric, challenger_value, champion, champion_value,
            delta, min_delta, decision,
        )  # fmt: skip
        result = {
            "decision": decision,
            "promoted": promote,
            "model_name": name,
            "alias": alias,
            "metric": metric,
            "mode": self.mode,
            "challenger_version": challenger,
            "champion_version": champion,
            "challenger_value": challenger_value,
            "champion_value": champion_value,
            "delta": delta,
        }
        push_mlflow_urls(context, model_version=self.hook.model_version_url(name, challenger))
        if promote and self.emit_asset_event:
            _emit_model_event(
                context, name, self.outlets,
                {"event": "promoted", "version": challenger, "previous_version": champion,
                 **{k: v for k, v in result.items() if k not in ("decision", "promoted")}},
            )  # fmt: skip
        return result


__all__ = [
    "MlflowPromoteModelOperator",
    "MlflowRegisterModelOperator",
    "MlflowSetAliasOperator",
    "compare_metrics",
    "mlflow_model_uri",
    "parse_min_delta",
]
