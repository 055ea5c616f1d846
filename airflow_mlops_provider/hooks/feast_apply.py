"""What ``feast apply`` would change: read a repo's definitions and diff them with the registry.

Used by :meth:`FeastHook.plan <airflow_mlops_provider.hooks.feast.FeastHook.plan>` and
:meth:`FeastHook.apply <airflow_mlops_provider.hooks.feast.FeastHook.apply>`, under the registry
lock. Feast is imported inside the functions.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from feast import FeatureStore

__all__ = ["ApplyPlan", "plan_changes", "read_repo"]


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


def read_repo(repo_path: Path, project: str) -> Any:
    """
    Parse the feature definitions of ``repo_path`` as ``feast apply`` does (``RepoContents``).

    :param repo_path: The feature repo directory.
    :param project: The project to declare when the repo defines none.
    """
    from feast.project import Project
    from feast.repo_operations import parse_repo

    with _inside_repo(repo_path):
        repo = parse_repo(repo_path)
    if not repo.projects:
        repo.projects.append(Project(name=project, description=""))
    return repo


def plan_changes(store: FeatureStore, project: str, repo: Any) -> ApplyPlan:
    """
    Diff ``repo`` (from :func:`read_repo`) with the store's registry, as read now.

    :param store: The store, its registry refreshed by the caller.
    :param project: The Feast project.
    :param repo: The parsed definitions.
    """
    from feast.diff.property_diff import TransitionType
    from feast.repo_operations import extract_objects_for_apply_delete

    registry_diff, _, _ = store.plan(repo)
    added, changed, deleted = [], [], []
    for diff in registry_diff.feast_object_diffs:
        item = (str(diff.feast_object_type.value), diff.name)
        if diff.transition_type == TransitionType.CREATE:
            added.append(item)
        elif diff.transition_type == TransitionType.UPDATE:
            changed.append(item)
        elif diff.transition_type == TransitionType.DELETE:
            deleted.append(item)
    # Objects in the registry that the repo no longer defines are deletions as well.
    _, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, repo)
    for obj in to_delete:
        item = (type(obj).__name__, obj.name)
        if item not in deleted and obj.name not in {n for _, n in deleted}:
            deleted.append(item)
    return ApplyPlan(added=added, changed=changed, deleted=deleted)


@contextmanager
def _inside_repo(repo_path: Path) -> Iterator[None]:
    """Import a repo's definitions the way the CLI does (cwd and sys.path at the repo), afresh.

    Modules are imported by their path relative to the repo, so two repos with a
    ``features.py`` would share one cached module: drop the repo's module names first.
    """
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
