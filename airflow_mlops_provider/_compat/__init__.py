"""The only place that touches another library's private API, each use behind a version gate.

Every module here (``feast``, ``mlflow``, ``docker``) names, next to each private name it uses,
the upstream code it relies on and the range of versions it was written and tested for. Outside
that range the gate either falls back to the library's public path or fails loudly with
:class:`UnsupportedVersionError`; it never guesses. :func:`version_gate` is the one check.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple

from airflow.sdk.exceptions import AirflowFailException

__all__ = ["UnsupportedVersionError", "VersionRange", "installed_version", "version_gate"]


class UnsupportedVersionError(AirflowFailException):
    """
    A private API is used on a version of its library it was not written for.

    An ``AirflowFailException``: retrying cannot change the installed version.
    """


class VersionRange(NamedTuple):
    """
    Versions of ``distribution`` a private-API use was written for: ``lowest <= v < below``.

    :param distribution: The PyPI distribution, e.g. ``"feast"``.
    :param lowest: The lowest version checked (inclusive).
    :param below: The first version not checked (exclusive), usually the next major or minor.
    :param what: The private names relied on, for the error message.
    """

    distribution: str
    lowest: str
    below: str
    what: str

    def contains(self, found: str | None) -> bool:
        if found is None:
            return False
        from packaging.version import Version

        return Version(self.lowest) <= Version(found) < Version(self.below)

    def describe(self, found: str | None) -> str:
        return (
            f"{self.what} is written for {self.distribution} >={self.lowest},<{self.below}; "
            f"installed: {found or 'not installed'}"
        )


@functools.cache
def installed_version(distribution: str) -> str | None:
    """Return the installed version of ``distribution``, or None when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def version_gate(gate: VersionRange, *, strict: bool = False) -> bool:
    """
    Return True when the installed version is inside ``gate``.

    :param gate: The checked range.
    :param strict: Raise :class:`UnsupportedVersionError` instead of returning False (for uses
        that have no public fallback).
    """
    found = installed_version(gate.distribution)
    if gate.contains(found):
        return True
    if strict:
        raise UnsupportedVersionError(gate.describe(found) + "; no public fallback exists")
    return False
