"""Hook for a Feast feature store: one feature repo, one lazily built ``FeatureStore``.

The connection (type ``feast``) names the repo in one of two ways:

- extra ``repo_path``: a directory holding ``feature_store.yaml`` and the feature definitions;
- extra ``feature_store_yaml``: the YAML itself. With ``repo_path`` too, it overrides the file
  in the repo; alone, the hook writes it to a private temporary directory, so relative paths in
  it mean little (use absolute ones) and ``apply`` has no definitions to read.

The connection password, when set, is the online store's password (Redis: appended to
``connection_string``; other stores: the ``password`` field). It is masked in logs.

Serialising concurrent runs
---------------------------
Feast's file registry is one protobuf file that every writer reads, modifies and rewrites in
place. Two tasks materializing at the same time lose each other's materialization intervals,
and a reader can catch the file half-written. The hook therefore

- takes an exclusive lock (:func:`airflow_mlops_provider.file_locks.hold_lock`) on
  ``registry.lock``, in the registry file's directory, around every registry read-modify-write
  (apply, and recording a materialized interval), re-reading the registry inside the lock;
- makes the file registry's writes atomic (temporary file + ``os.replace``);
- does the long part of a materialization (offline read, online write) outside the lock, so
  feature views fan out in parallel (:mod:`.feast_materialize`);
- for a SQLite online store, which admits one writer at a time, prepares each batch outside
  the database lock and queues the writes on ``<online db>.write.lock`` (``_feast_sqlite``);
- keeps ``asset-<view>.lock`` from a materialize task's asset event to the end of its process
  (:meth:`FeastHook.hold_until_exit`), so Airflow never creates one feature view's asset for
  two tasks at once (``FeastMaterializeOperator._emit_asset_events``).

The lock holds between processes of one host. Workers on several hosts need a SQL registry, or
an Airflow pool of size 1 per repo for the Feast tasks. Nothing slow happens inside it: the
``FeatureStore`` is built (and feast imported) before the lock is taken.

Feast is imported through :func:`~airflow_mlops_provider._compat.feast.import_feast`, by default
without typeguard's import-time instrumentation (2.7 s of the 4 s ``import feast`` takes on a
2-core host); ``FeastApplyOperator`` and ``FeastHook(typecheck=True)`` keep it. Every private
Feast name the hook relies on is reached through :mod:`airflow_mlops_provider._compat.feast`,
behind a version gate with a public fallback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider._compat import feast as feast_compat
from airflow_mlops_provider._compat.feast import import_feast
from airflow_mlops_provider.exceptions import FeatureStoreError
from airflow_mlops_provider.file_locks import hold_lock, try_lock_fd
from airflow_mlops_provider.hooks import feast_materialize
from airflow_mlops_provider.hooks.feast_apply import ApplyPlan
from airflow_mlops_provider.hooks.feast_errors import FeastLockTimeoutError, is_transient_feast_error
from airflow_mlops_provider.hooks.feast_materialize import ViewMaterialization

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from datetime import datetime

    from feast import FeatureStore, FeatureView
    from feast.repo_config import RepoConfig

__all__ = ["ApplyPlan", "FeastHook", "FeastLockTimeoutError", "ViewMaterialization", "import_feast"]

#: Lock file path -> descriptor of the locks :meth:`FeastHook.hold_until_exit` took.
_HELD_UNTIL_EXIT: dict[str, int] = {}


class FeastHook(BaseHook):
    """
    Interact with one Feast feature repo; the ``FeatureStore`` is built on first use.

    :param feast_conn_id: Airflow connection of type ``feast``.
    :param lock_timeout: Seconds to wait for the registry lock before failing.
    :param typecheck: Import feast with typeguard's run-time type checks of its classes (see
        :func:`import_feast`); off by default, which saves about 2.7 s per process.
    """

    conn_name_attr = "feast_conn_id"
    default_conn_name = "feast_default"
    conn_type = "feast"
    hook_name = "Feast"

    def __init__(
        self, feast_conn_id: str = default_conn_name, *, lock_timeout: float = 600.0, typecheck: bool = False
    ) -> None:
        super().__init__()
        if (
            isinstance(lock_timeout, bool)
            or not isinstance(lock_timeout, (int, float))
            or not 0 <= lock_timeout <= sys.float_info.max
        ):
            raise ValueError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        self.feast_conn_id = feast_conn_id
        self.lock_timeout = lock_timeout
        self.typecheck = typecheck

    # --- configuration -------------------------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.feast_conn_id)

    @cached_property
    def _extras(self) -> dict[str, Any]:
        extra = self.connection.extra_dejson
        return extra if isinstance(extra, dict) else {}

    @cached_property
    def repo_path(self) -> Path | None:
        """The feature repo directory named by the connection, checked to exist."""
        raw = self._extras.get("repo_path")
        if not raw:
            if not self._extras.get("feature_store_yaml"):
                raise AirflowFailException(
                    f"Feast connection {self.feast_conn_id!r} names no feature repo: "
                    "set extra 'repo_path' or 'feature_store_yaml'"
                )
            return None
        path = Path(str(raw)).expanduser()
        if not path.is_dir():
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r}: repo_path {str(path)!r} is not a directory"
            )
        if not self._extras.get("feature_store_yaml") and not (path / "feature_store.yaml").is_file():
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r}: repo_path {str(path)!r} has no feature_store.yaml"
            )
        return path.resolve()

    @cached_property
    def repo_dir(self) -> Path:
        """Directory the ``FeatureStore`` resolves relative paths against."""
        if self.repo_path is not None:
            return self.repo_path
        return Path(tempfile.mkdtemp(prefix="airflow-feast-repo-"))  # mode 0700

    def _yaml_text(self) -> str:
        text = self._extras.get("feature_store_yaml")
        if text:
            return str(text)
        assert self.repo_path is not None
        return (self.repo_path / "feature_store.yaml").read_text()

    @cached_property
    def raw_config(self) -> dict[str, Any]:
        """The parsed ``feature_store.yaml`` (environment variables expanded, password added)."""
        import yaml

        source = (
            "feature_store_yaml extra" if self._extras.get("feature_store_yaml") else "feature_store.yaml"
        )
        try:
            raw = yaml.safe_load(os.path.expandvars(self._yaml_text()))
        except yaml.YAMLError as err:
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r}: {source} is not valid YAML: {err}"
            ) from err
        if not isinstance(raw, dict):
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r}: {source} must be a YAML mapping, got {raw!r}"
            )
        self._add_password(raw)
        return raw

    def _add_password(self, raw: dict[str, Any]) -> None:
        password = self.connection.password
        if not password:
            return
        from airflow.sdk.log import mask_secret

        mask_secret(password)
        online = raw.get("online_store")
        if not isinstance(online, dict):
            return
        if online.get("type") == "redis":
            conn_str = str(online.get("connection_string", "localhost:6379"))
            if "password=" not in conn_str:
                online["connection_string"] = f"{conn_str},password={password}"
                mask_secret(online["connection_string"])
        else:
            online.setdefault("password", password)

    @cached_property
    def repo_config(self) -> RepoConfig:
        """Feast's ``RepoConfig`` for the connection."""
        import_feast(typecheck=self.typecheck)
        from feast.repo_config import RepoConfig

        try:
            config = RepoConfig(**self.raw_config)
        except Exception as err:  # pydantic.ValidationError and Feast's own config errors
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r}: invalid feature_store.yaml: {err}"
            ) from err
        config.repo_path = self.repo_dir
        return config

    @cached_property
    def store(self) -> FeatureStore:
        """The ``FeatureStore``, built on first access."""
        import_feast(typecheck=self.typecheck)
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(self.repo_dir), config=self.repo_config)
        if self.registry_file is not None:
            feast_compat.make_file_registry_writes_atomic(store)
        return store

    def get_conn(self) -> FeatureStore:
        """Return the ``FeatureStore``."""
        return self.store

    @property
    def project(self) -> str:
        return str(self.raw_config.get("project", ""))

    # --- serialisation -------------------------------------------------------------------

    @cached_property
    def registry_file(self) -> Path | None:
        """The local file registry's path, resolved as Feast does (None for SQL and remote registries)."""
        registry = self.raw_config.get("registry", "data/registry.db")
        if isinstance(registry, dict):
            if registry.get("registry_type", "file") != "file":
                return None
            registry = registry.get("path", "data/registry.db")
        registry = str(registry)
        if "://" in registry:
            return None
        path = Path(registry)
        return path if path.is_absolute() else self.repo_dir / path

    @cached_property
    def lock_dir(self) -> Path | None:
        """Directory of the lock files: the file registry's own directory (None for SQL registries)."""
        return None if self.registry_file is None else self.registry_file.parent

    def lock_at(self, path: Path, what: str) -> AbstractContextManager[None]:
        """
        Exclusive lock on the file ``path`` (between processes of one host), held for a ``with`` block.

        :param path: The lock file, created with its directory if missing.
        :param what: Names the lock in the timeout error.
        :raises FeastLockTimeoutError: after ``lock_timeout`` seconds.
        """

        def timed_out(waited: float) -> Exception:
            return FeastLockTimeoutError(
                f"Timed out after {waited:.0f} s waiting for the Feast {what} {str(path)!r}"
            )

        return hold_lock(path, self.lock_timeout, timed_out)

    def file_lock(self, name: str, what: str) -> AbstractContextManager[None]:
        """The lock ``name`` in :attr:`lock_dir`; no lock for SQL registries."""
        if self.lock_dir is None:
            return nullcontext()
        return self.lock_at(self.lock_dir / name, what)

    def registry_lock(self) -> AbstractContextManager[None]:
        """Exclusive lock around a registry read-modify-write (between processes of one host)."""
        return self.file_lock("registry.lock", "registry lock")

    def hold_until_exit(self, name: str, timeout: float) -> bool:
        """
        Take the lock ``name`` in :attr:`lock_dir` and keep it until this process exits.

        For what must stay serialised beyond the hook's own calls, up to the end of the task
        process (the kernel drops the lock then, even after a ``SIGKILL``). Taking a lock this
        process holds already returns at once.

        :param name: The lock file's name.
        :param timeout: Seconds to wait for another process to let it go.
        :returns: True when held; False for SQL and remote registries (no lock directory), or
            after ``timeout``.
        """
        if self.lock_dir is None:
            return False
        path = self.lock_dir / name
        if str(path) in _HELD_UNTIL_EXIT:
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while (fd := try_lock_fd(path)) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        _HELD_UNTIL_EXIT[str(path)] = fd  # never closed: the lock lasts as long as the process
        return True

    # --- reading the registry ------------------------------------------------------------

    def list_feature_views(self) -> list[str]:
        """Names of the project's feature views (re-read from the registry)."""
        store = self.store  # built outside the lock: it imports feast
        with self.registry_lock():
            store.refresh_registry()
        return sorted(fv.name for fv in store.list_feature_views())

    def test_connection(self) -> tuple[bool, str]:
        """Build the store and list its feature views (the Connections UI's Test button)."""
        try:
            views = self.list_feature_views()
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        return True, f"Feast project {self.project!r}: {len(views)} feature view(s): {', '.join(views)}"

    def get_feature_views(self, names: list[str] | None) -> list[FeatureView]:
        """
        Return the named feature views (all online ones when ``names`` is None).

        :raises FeatureStoreError: naming an unknown view and listing the known ones.
        """
        store = self.store  # built outside the lock: it imports feast
        with self.registry_lock():
            store.refresh_registry()
        known = {fv.name: fv for fv in store.list_feature_views()}
        if names is None:
            return [known[n] for n in sorted(known) if known[n].online]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise FeatureStoreError(
                f"Unknown feature view(s) {', '.join(map(repr, unknown))} in Feast project "
                f"{self.project!r}; known feature views: {', '.join(sorted(known)) or '(none)'}",
                feature_view=unknown[0],
            )
        return [known[n] for n in names]

    def most_recent_end_time(self, feature_view: str) -> datetime | None:
        """End of the latest materialized interval of ``feature_view`` (tz-aware UTC), or None."""
        (view,) = self.get_feature_views([feature_view])
        end = view.most_recent_end_time
        if end is None:
            return None
        return end if end.tzinfo else end.replace(tzinfo=timezone.utc)

    # --- apply ---------------------------------------------------------------------------

    def _repo_contents(self) -> Any:
        from airflow_mlops_provider.hooks.feast_apply import read_repo

        if self.repo_path is None:
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r} has no repo_path: "
                "apply needs the directory with the feature definitions"
            )
        return read_repo(self.repo_path, self.project)

    def plan(self) -> ApplyPlan:
        """Compute what applying the repo's definitions would add, change and delete."""
        self.store  # noqa: B018 - built (and feast imported) outside the lock
        with self.registry_lock():
            return self._plan_locked()

    def _plan_locked(self) -> ApplyPlan:
        from airflow_mlops_provider.hooks.feast_apply import plan_changes

        repo = self._repo_contents()
        if self.registry_file_exists():
            self.store.refresh_registry()
        return plan_changes(self.store, self.project, repo)

    def registry_file_exists(self) -> bool:
        """False only for a file registry whose file is not written yet."""
        return self.registry_file is None or self.registry_file.exists()

    def apply(self, *, allow_deletes: bool = False, log: Callable[[str], None] | None = None) -> ApplyPlan:
        """
        Apply the repo's definitions the way ``feast apply`` does, under the registry lock.

        :param allow_deletes: Apply even when objects would be deleted.
        :param log: Receives the plan as text before anything changes.
        :raises FeatureStoreError: when the plan deletes objects and ``allow_deletes`` is False.
        """
        self.store  # noqa: B018 - built (and feast imported) outside the lock
        from feast.repo_operations import apply_total_with_repo_instance

        with self.registry_lock():
            plan = self._plan_locked()
            if log:
                log(plan.describe())
            if plan.deleted and not allow_deletes:
                names = ", ".join(f"{kind} {name}" for kind, name in plan.deleted)
                raise FeatureStoreError(
                    f"Applying the Feast repo would delete: {names}. Pass allow_deletes=True to delete them."
                )
            repo = self._repo_contents()
            apply_total_with_repo_instance(
                self.store, self.project, self.store.registry, repo, skip_source_validation=False
            )
            self.store.refresh_registry()
        return plan

    # --- materialize ---------------------------------------------------------------------

    #: Materialize feature views over a window: :func:`.feast_materialize.materialize`.
    materialize = feast_materialize.materialize

    # --- errors --------------------------------------------------------------------------

    @staticmethod
    def is_transient_error(err: BaseException) -> bool:
        """True for an error worth retrying: see :func:`.feast_errors.is_transient_feast_error`."""
        return is_transient_feast_error(err)
