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

- takes an exclusive ``fcntl`` lock on ``registry.lock``, in the registry file's directory,
  around every registry read-modify-write (apply, and recording a materialized interval),
  re-reading the registry inside the lock;
- makes the file registry's writes atomic (temporary file + ``os.replace``);
- does the long part of a materialization (offline read, online write) outside the lock, so
  feature views fan out in parallel;
- for a SQLite online store, which admits one writer at a time, prepares each batch outside
  the database lock and queues the writes on ``<online db>.write.lock`` (``_feast_sqlite``).

The lock holds between processes of one host. Workers on several hosts need a SQL registry, or
an Airflow pool of size 1 per repo for the Feast tasks. Nothing slow happens inside it: the
``FeatureStore`` is built (and feast imported) before the lock is taken.

Importing feast
---------------
Feast decorates its definition classes with typeguard's ``@typechecked``. At import, typeguard
instruments each method by re-reading, re-parsing and re-compiling the whole defining module,
once per method: about 2.7 s of the 4 s that ``import feast`` takes on a 2-core host, paid by
every task process. The hook imports feast through :func:`import_feast`, which, unless the hook
was made with ``typecheck=True``, turns that instrumentation off for the duration of the import
(as ``python -O`` does). Feast then skips its run-time argument type checks; the values it reads
and writes are the same. ``FeastApplyOperator`` keeps the checks, because ``apply`` runs the
user's own definitions. Whichever import comes first in a process decides for that process.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import FeatureStoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from feast import FeatureStore, FeatureView
    from feast.repo_config import RepoConfig


_FEAST_IMPORT_LOCK = threading.Lock()


def _skip_instrumentation(target: Any = None, **_options: Any) -> Any:
    """Stand-in for ``typeguard.typechecked``: return the class or function unchanged."""
    if target is None:
        return _skip_instrumentation
    return target


def import_feast(*, typecheck: bool = False) -> None:
    """
    Import feast once per process, by default without typeguard's import-time instrumentation.

    :param typecheck: Keep typeguard's ``@typechecked`` instrumentation of Feast's classes (run-
        time argument type checks, about 2.7 s more import time). Has no effect once feast is
        imported in this process.
    """
    if "feast" in sys.modules:
        return
    with _FEAST_IMPORT_LOCK:
        if "feast" in sys.modules:
            return
        if typecheck:
            import feast

            return
        import typeguard  # a dependency of feast

        original = typeguard.typechecked
        typeguard.typechecked = _skip_instrumentation
        try:
            import feast  # noqa: F401
        finally:
            typeguard.typechecked = original


@dataclass(frozen=True)
class ApplyPlan:
    """What ``feast apply`` would change: ``(object type, name)`` per kind of change."""

    added: list[tuple[str, str]]
    changed: list[tuple[str, str]]
    deleted: list[tuple[str, str]]

    def describe(self) -> str:
        lines = []
        for label, items in (("add", self.added), ("change", self.changed), ("delete", self.deleted)):
            lines += [f"  {label:<6} {kind} {name}" for kind, name in items]
        return "\n".join(lines) if lines else "  (no changes)"


@dataclass(frozen=True)
class ViewMaterialization:
    """The outcome of materializing one feature view over one window."""

    feature_view: str
    rows: int
    start: datetime
    end: datetime
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary: rows, window (ISO 8601) and seconds."""
        return {
            "rows": self.rows,
            "window": [self.start.isoformat(), self.end.isoformat()],
            "seconds": round(self.seconds, 3),
        }


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
        _make_file_registry_writes_atomic(store)
        return store

    def get_conn(self) -> FeatureStore:
        """Return the ``FeatureStore``."""
        return self.store

    @property
    def project(self) -> str:
        return str(self.raw_config.get("project", ""))

    # --- serialisation -------------------------------------------------------------------

    @cached_property
    def lock_dir(self) -> Path | None:
        """Directory of the lock files: the file registry's own directory (None for SQL registries)."""
        registry = self.raw_config.get("registry", "data/registry.db")
        if isinstance(registry, dict):
            if registry.get("registry_type", "file") != "file":
                return None
            registry = registry.get("path", "data/registry.db")
        registry = str(registry)
        if "://" in registry:
            return None
        path = Path(registry)
        if not path.is_absolute():
            path = self.repo_dir / path
        return path.parent

    @contextmanager
    def _file_lock(self, name: str, what: str) -> Iterator[None]:
        lock_dir = self.lock_dir
        if lock_dir is None:
            yield
            return
        with _flock(lock_dir / name, self.lock_timeout, what):
            yield

    def registry_lock(self) -> Any:
        """Exclusive lock around a registry read-modify-write (between processes of one host)."""
        return self._file_lock("registry.lock", "registry lock")

    def _view_write_lock(self, feature_view: str) -> Any:
        return self._file_lock(f"online-{feature_view}.lock", f"online write lock of {feature_view!r}")

    def _write_batch(
        self, write: Any, online_store: Any, config: Any, table: Any, data: Any, progress: Any
    ) -> None:
        """
        Write one batch with the online store's own ``online_write_batch`` (``write``).

        SQLite admits one writer at a time: for a SQLite online store the rows are prepared
        outside the database lock and written with ``executemany`` under a file lock that
        parallel tasks queue on (see ``_feast_sqlite``). Other stores take concurrent writers.
        """
        if type(online_store).__name__ != "SqliteOnlineStore":
            write(config, table, data, progress)
            return
        from airflow_mlops_provider.hooks import _feast_sqlite

        _feast_sqlite.write_batch(
            write,
            online_store,
            config,
            table,
            data,
            progress,
            lock=lambda db: _flock(
                db.with_name(db.name + ".write.lock"), self.lock_timeout, "SQLite online store lock"
            ),
        )

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
        from feast.project import Project
        from feast.repo_operations import parse_repo

        if self.repo_path is None:
            raise AirflowFailException(
                f"Feast connection {self.feast_conn_id!r} has no repo_path: "
                "apply needs the directory with the feature definitions"
            )
        with _inside_repo(self.repo_path):
            repo = parse_repo(self.repo_path)
        if not repo.projects:
            repo.projects.append(Project(name=self.project, description=""))
        return repo

    def plan(self) -> ApplyPlan:
        """Compute what applying the repo's definitions would add, change and delete."""
        import_feast(typecheck=self.typecheck)
        from feast.diff.property_diff import TransitionType

        self.store  # noqa: B018 - built outside the lock
        with self.registry_lock():
            return self._plan_locked(TransitionType)

    def _plan_locked(self, transition_type: Any) -> ApplyPlan:
        repo = self._repo_contents()
        if self.registry_file_exists():
            self.store.refresh_registry()
        registry_diff, _, _ = self.store.plan(repo)
        added, changed, deleted = [], [], []
        for diff in registry_diff.feast_object_diffs:
            item = (str(diff.feast_object_type.value), diff.name)
            if diff.transition_type == transition_type.CREATE:
                added.append(item)
            elif diff.transition_type == transition_type.UPDATE:
                changed.append(item)
            elif diff.transition_type == transition_type.DELETE:
                deleted.append(item)
        # Objects in the registry that the repo no longer defines are deletions as well.
        from feast.repo_operations import extract_objects_for_apply_delete

        _, to_delete, _, _ = extract_objects_for_apply_delete(self.project, self.store.registry, repo)
        for obj in to_delete:
            item = (type(obj).__name__, obj.name)
            if item not in deleted and obj.name not in {n for _, n in deleted}:
                deleted.append(item)
        return ApplyPlan(added=added, changed=changed, deleted=deleted)

    def registry_file_exists(self) -> bool:
        path = getattr(self.store.registry, "_file_path", None)
        return path is None or Path(path).exists()

    def apply(self, *, allow_deletes: bool = False, log: Callable[[str], None] | None = None) -> ApplyPlan:
        """
        Apply the repo's definitions the way ``feast apply`` does, under the registry lock.

        :param allow_deletes: Apply even when objects would be deleted.
        :param log: Receives the plan as text before anything changes.
        :raises FeatureStoreError: when the plan deletes objects and ``allow_deletes`` is False.
        """
        import_feast(typecheck=self.typecheck)
        from feast.diff.property_diff import TransitionType
        from feast.repo_operations import apply_total_with_repo_instance

        self.store  # noqa: B018 - built outside the lock
        with self.registry_lock():
            plan = self._plan_locked(TransitionType)
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

    def materialize(
        self,
        feature_views: list[str] | None,
        start: datetime | None,
        end: datetime,
        *,
        online_write_batch_size: int | None = None,
        newer_wins: bool = False,
        progress: Callable[[str, int, float], None] | None = None,
    ) -> list[ViewMaterialization]:
        """
        Materialize feature views one after another over ``[start, end]``.

        Does what ``FeatureStore.materialize`` does for the local provider (offline read,
        online write, interval recorded in the registry), with the registry lock around the
        registry write only, and counting the rows written.

        :param feature_views: Names; None means every online feature view.
        :param start: Window start; None means incremental (from the view's last materialized end).
        :param end: Window end (inclusive, as in Feast).
        :param online_write_batch_size: Rows per online-store write batch (bounds memory).
        :param newer_wins: Skip rows older than what the online store already holds for an
            entity (so windows materialized in any order, or in parallel, give the same store).
        :param progress: Called after each written batch with (feature view, rows so far, seconds).
        """
        store = self.store
        views = self.get_feature_views(feature_views)
        if online_write_batch_size is not None:
            store.config.materialization_config.online_write_batch_size = online_write_batch_size
        results = []
        for view in views:
            view_start = start if start is not None else self._incremental_start(view)
            results.append(
                self._materialize_view(view, view_start, end, newer_wins=newer_wins, on_progress=progress)
            )
        return results

    @staticmethod
    def _incremental_start(view: FeatureView) -> datetime:
        start = view.most_recent_end_time
        if start is not None:
            return start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        now = datetime.now(timezone.utc)
        if view.ttl and view.ttl.total_seconds() > 0:
            return now - view.ttl
        return datetime(1970, 1, 1, tzinfo=timezone.utc)

    def _materialize_view(
        self,
        view: FeatureView,
        start: datetime,
        end: datetime,
        *,
        newer_wins: bool,
        on_progress: Callable[[str, int, float], None] | None,
    ) -> ViewMaterialization:
        store = self.store
        provider = store._get_provider()
        online_store = provider.online_store
        started = time.monotonic()
        counter = {"rows": 0}
        original_write = online_store.online_write_batch
        guard_lock = threading.Lock()

        def counting_write(config: Any, table: Any, data: Any, progress: Any = None) -> None:
            with guard_lock:
                if newer_wins and data:
                    with self._view_write_lock(table.name):
                        data = _drop_older_rows(online_store, config, table, data)
                        self._write_batch(original_write, online_store, config, table, data, progress)
                else:
                    self._write_batch(original_write, online_store, config, table, data, progress)
                counter["rows"] += len(data)
                if on_progress:
                    on_progress(table.name, counter["rows"], time.monotonic() - started)

        online_store.online_write_batch = counting_write  # type: ignore[method-assign]
        try:
            provider.materialize_single_feature_view(
                config=store.config,
                feature_view=view,
                start_date=start,
                end_date=end,
                registry=store.registry,
                project=store.project,
                tqdm_builder=_quiet_tqdm,
            )
        except Exception as err:
            raise FeatureStoreError(
                f"Materializing feature view {view.name!r} over [{start.isoformat()}, {end.isoformat()}] "
                f"failed: {err}",
                feature_view=view.name,
            ) from err
        finally:
            del online_store.online_write_batch
        with self.registry_lock():
            store.registry.refresh(store.project)
            store.registry.apply_materialization(view, store.project, start, end, commit=True)
        return ViewMaterialization(
            feature_view=view.name,
            rows=counter["rows"],
            start=start,
            end=end,
            seconds=time.monotonic() - started,
        )


@contextmanager
def _flock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path``; FeatureStoreError after ``timeout`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FeatureStoreError(
                        f"Timed out after {timeout:.0f} s waiting for the Feast {what} {str(path)!r}"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _inside_repo(repo_path: Path) -> Iterator[None]:
    """Import a repo's definitions the way the CLI does (cwd and sys.path at the repo), afresh.

    Modules are imported by their path relative to the repo, so two repos with a
    ``features.py`` would share one cached module: drop the repo's module names first.
    """
    import sys

    from feast.repo_operations import get_repo_files

    previous_cwd = os.getcwd()
    os.chdir(repo_path)
    sys.path.insert(0, str(repo_path))
    try:
        for repo_file in get_repo_files(repo_path):
            module = ".".join(repo_file.relative_to(repo_path).with_suffix("").parts)
            sys.modules.pop(module, None)
        yield
    finally:
        os.chdir(previous_cwd)
        if sys.path and sys.path[0] == str(repo_path):
            sys.path.pop(0)


def _quiet_tqdm(length: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=length, disable=True)


def _drop_older_rows(online_store: Any, config: Any, table: Any, data: list[Any]) -> list[Any]:
    """Keep the rows whose event time is at least the one stored for their entity."""
    stored = online_store.online_read(config, table, [row[0] for row in data], None)
    kept = []
    for row, (stored_ts, _) in zip(data, stored):
        new_ts = row[2]
        if stored_ts is not None and _as_utc(stored_ts) > _as_utc(new_ts):
            continue
        kept.append(row)
    return kept


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _make_file_registry_writes_atomic(store: FeatureStore) -> None:
    """Let a file registry write a temporary file and rename it, so no reader sees half a file."""
    registry_store = getattr(store.registry, "_registry_store", None)
    filepath = getattr(registry_store, "_filepath", None)
    if registry_store is None or filepath is None or type(registry_store).__name__ != "FileRegistryStore":
        return

    def write_atomically(registry_proto: Any) -> None:
        import uuid

        from feast.utils import _utc_now

        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        path = Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(registry_proto.SerializeToString())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    registry_store._write_registry = write_atomically
