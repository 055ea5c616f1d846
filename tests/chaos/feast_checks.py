"""What scenario 4 reads back from a Feast repo after overlapping or killed materializations.

- :func:`online_snapshot` reads every Redis hash of one Feast project, keyed by the serialized
  entity key (the key without the project suffix), so two projects over the same data compare
  byte for byte: features, their values and the ``_ts:<view>`` event times;
- :func:`online_differences` compares a snapshot with the clean run's;
- :func:`check_registry` loads the registry through the hook (Feast's API), then parses the
  file itself: the same objects as the clean registry, none twice, every recorded
  materialization interval the window, as many as expected per feature view;
- :func:`write_progress` is the share of sampled entities whose row of one feature view is in
  Redis, which tells when a SIGKILL lands inside that view's online write.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.feast_repo import FeatureRepo

Snapshot = dict[bytes, dict[bytes, bytes]]


@dataclass
class FeastCase:
    """One repetition's repo: its own directory, Feast project and Airflow connection."""

    repo: FeatureRepo
    conn_id: str

    @property
    def project(self) -> str:
        return self.repo.project


def online_snapshot(client: Any, project: str) -> Snapshot:
    """Every Redis hash of ``project``: ``{serialized entity key: {field: value}}``."""
    suffix = project.encode()
    keys = [k for k in client.scan_iter(match=b"*" + suffix, count=10_000) if k.endswith(suffix)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {key[: -len(suffix)]: value for key, value in zip(keys, pipe.execute())}


def field_names(views: list[str], features: tuple[str, ...]) -> dict[bytes, str]:
    """Redis hash field -> ``view:feature`` (or ``_ts:view``), to name what differs."""
    from feast.infra.online_stores.helpers import _mmh3

    names = {f"_ts:{view}".encode(): f"_ts:{view}" for view in views}
    names.update({_mmh3(f"{view}:{feat}"): f"{view}:{feat}" for view in views for feat in features})
    return names


def online_differences(clean: Snapshot, case: Snapshot, names: dict[bytes, str]) -> tuple[int, list[str]]:
    """Entities whose online row differs from the clean run's: (count, a few descriptions)."""
    missing = clean.keys() - case.keys()
    extra = case.keys() - clean.keys()
    fields: Counter[str] = Counter()
    differ = 0
    for key in clean.keys() & case.keys():
        if clean[key] == case[key]:
            continue
        differ += 1
        for name in clean[key].keys() | case[key].keys():
            if clean[key].get(name) != case[key].get(name):
                fields[names.get(name, repr(name))] += 1
    notes = []
    if missing:
        notes.append(f"{len(missing)} entities missing online")
    if extra:
        notes.append(f"{len(extra)} entities online that the clean run lacks")
    if differ:
        notes.append(f"{differ} entities differ ({dict(fields)})")
    return len(missing) + len(extra) + differ, notes


def write_progress(client: Any, sample: list[bytes], project: str, view: str) -> float:
    """Share of ``sample`` (serialized entity keys) whose ``view`` row is already online."""
    suffix = project.encode()
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.hexists(key + suffix, f"_ts:{view}")
    return sum(map(bool, pipe.execute())) / len(sample)


def read_registry(path: Path) -> Any:
    """The registry file parsed (``feast.core.Registry``)."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    proto.ParseFromString(path.read_bytes())
    return proto


def registry_objects(proto: Any, project: str) -> dict[str, Counter[str]]:
    """``{kind: Counter(object name)}`` of a registry file; ``project`` itself is named ``<project>``."""

    def own(name: str) -> str:
        return "<project>" if name == project else name

    history = proto.feature_view_version_history.records
    return {
        "entities": Counter(e.spec.name for e in proto.entities),
        "feature_views": Counter(fv.spec.name for fv in proto.feature_views),
        "data_sources": Counter(ds.name for ds in proto.data_sources),
        "projects": Counter(own(p.spec.name) for p in proto.projects),
        "project_metadata": Counter(own(m.project) for m in proto.project_metadata),
        "feature_view_versions": Counter(f"{r.feature_view_name} v{r.version_number}" for r in history),
    }


def _as_utc(stamp: Any) -> datetime:
    return stamp.ToDatetime().replace(tzinfo=timezone.utc)


def intervals(proto: Any) -> dict[str, list[tuple[datetime, datetime]]]:
    """Recorded materialization intervals per feature view."""
    return {
        fv.spec.name: [
            (_as_utc(i.start_time), _as_utc(i.end_time)) for i in fv.meta.materialization_intervals
        ]
        for fv in proto.feature_views
    }


@dataclass
class RegistryCheck:
    """What :func:`check_registry` found: damage, and intervals recorded beyond the expected."""

    problems: list[str] = field(default_factory=list)
    #: Materializations recorded more often than they completed (double runs), with notes.
    surplus: int = 0
    surplus_notes: list[str] = field(default_factory=list)


def check_registry(
    case: FeastCase,
    clean: dict[str, Counter[str]],
    window: tuple[datetime, datetime],
    expected_intervals: dict[str, int],
) -> RegistryCheck:
    """
    Load the case's registry (Feast's API through the hook), then compare its file with the clean one.

    Problems: it does not load, lists other feature views, holds other objects than the clean
    registry (or one twice), an interval other than ``window``, fewer intervals than expected
    (a lost update), or a temporary file of an interrupted write.

    :param clean: :func:`registry_objects` of the clean repo's registry.
    :param window: The one window every run materialized.
    :param expected_intervals: How many intervals each feature view must have recorded.
    """
    from airflow_mlops_provider.hooks.feast import FeastHook

    found = RegistryCheck()
    try:
        listed = FeastHook(case.conn_id).list_feature_views()
    except Exception as err:
        found.problems.append(f"{case.project}: the registry does not load: {type(err).__name__}: {err}")
        return found
    if listed != sorted(expected_intervals):
        found.problems.append(
            f"{case.project}: Feast lists feature views {listed}, expected {sorted(expected_intervals)}"
        )
    proto = read_registry(case.repo.registry_path)
    objects = registry_objects(proto, case.project)
    for kind in sorted(objects.keys() | clean.keys()):
        if objects.get(kind) != clean.get(kind):
            found.problems.append(
                f"{case.project}: registry {kind} {dict(objects.get(kind, {}))}, "
                f"clean run {dict(clean.get(kind, {}))}"
            )
    for view, recorded in sorted(intervals(proto).items()):
        wrong = [(s.isoformat(), e.isoformat()) for s, e in recorded if (s, e) != window]
        if wrong:
            found.problems.append(f"{case.project}: {view} recorded intervals other than the window: {wrong}")
        want = expected_intervals.get(view, 0)
        note = f"{case.project}: {view} recorded {len(recorded)} interval(s), expected {want}"
        if len(recorded) < want:
            found.problems.append(note + " (a lost registry update)")
        elif len(recorded) > want:
            found.surplus += len(recorded) - want
            found.surplus_notes.append(note)
    left = sorted(p.name for p in case.repo.registry_path.parent.glob(f".{case.repo.registry_path.name}.*"))
    if left:
        found.problems.append(f"{case.project}: temporary registry files left: {left}")
    return found
