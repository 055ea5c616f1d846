"""Versions for the CI version matrix (``scripts/ci/matrix.sh``, ``make test-matrix``).

``python matrix_versions.py pins``
    Print ``name==floor`` for every requirement that ``pyproject.toml`` declares with ``>=``
    (``[project] dependencies`` and every extra): the floor environment installs exactly these.
``ENV/bin/python matrix_versions.py record``
    Print ``{name: version}`` (JSON) of every distribution installed in the running interpreter.
``python matrix_versions.py check RECORD.json``
    Exit 1, naming them, when the versions in RECORD.json differ from the declared floors.
``python matrix_versions.py table DIR ENV...``
    Print a Markdown table: each direct dependency's declared floor, its version in each
    ``DIR/ENV.versions.json``, the newest release on the index (``DIR/ENV.newest.json`` where
    the matrix wrote one), the locked version (``.venv`` or ``uv.lock``), then the transitive packages the
    floor caps or that often break old releases.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "scripts" / "ci" / "floor-constraints.txt"
#: Transitive packages worth seeing in the table besides the capped ones.
WATCHED = ["numpy", "pandas", "pyarrow", "protobuf", "pydantic", "starlette", "kubernetes"]
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)")


def normalize(name: str) -> str:
    """The PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_floors(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """``{name: floor}`` of every ``>=`` requirement of the project and its extras (not itself)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    own = normalize(project["name"])
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    floors: dict[str, str] = {}
    for requirement in requirements:
        match = _REQ.match(requirement)
        if not match or normalize(match.group(1)) == own:
            continue
        floor = re.search(r">=\s*([^,\s]+)", match.group(3))
        if floor:
            floors[normalize(match.group(1))] = floor.group(1)
    return floors


def capped_names(path: Path = CONSTRAINTS) -> list[str]:
    """Names of the packages that the floor constraints file caps."""
    names = []
    for line in path.read_text().splitlines():
        match = _REQ.match(line.split("#", 1)[0])
        if match:
            names.append(normalize(match.group(1)))
    return names


def locked_versions(directory: Path, lock: Path = REPO / "uv.lock") -> dict[str, str]:
    """``{name: version}`` of the locked dev environment.

    ``DIR/locked.versions.json`` (recorded from ``.venv``) when the matrix wrote it, else
    ``uv.lock``, where a package locked at two versions (per Python marker) shows both.
    """
    recorded = _load(directory / "locked.versions.json")
    if recorded or not lock.exists():
        return recorded
    versions: dict[str, list[str]] = {}
    for package in tomllib.loads(lock.read_text()).get("package", []):
        if "version" in package:
            versions.setdefault(normalize(package["name"]), []).append(package["version"])
    return {name: "/".join(found) for name, found in versions.items()}


def installed_versions() -> dict[str, str]:
    """``{name: version}`` of the running interpreter's environment."""
    from importlib.metadata import distributions

    return {normalize(d.metadata["Name"]): d.version for d in distributions()}


def _load(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def table(directory: Path, envs: list[str]) -> str:
    """The Markdown table of versions per environment (see the module docstring)."""
    floors = declared_floors()
    installed = {env: _load(directory / f"{env}.versions.json") for env in envs}
    newest = {}
    for env in envs:
        newest.update(_load(directory / f"{env}.newest.json"))
    locked = locked_versions(directory)
    header = ["package", "declared floor", *(f"{env} env" for env in envs), "newest on index", "locked"]
    rows = [header, ["---"] * len(header)]
    for name in floors:
        latest = next((installed[e].get(name) for e in reversed(envs) if installed[e].get(name)), None)
        rows.append(
            [
                name,
                floors[name],
                *(installed[e].get(name, "-") for e in envs),
                newest.get(name) or latest or "-",
                locked.get(name, "-"),
            ]
        )
    for name in dict.fromkeys(capped_names() + WATCHED):
        rows.append(
            [f"({name})", "", *(installed[e].get(name, "-") for e in envs), "", locked.get(name, "-")]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "pins":
        print("\n".join(f"{name}=={floor}" for name, floor in declared_floors().items()))
    elif command == "record":
        print(json.dumps(installed_versions(), indent=1, sort_keys=True))
    elif command == "check" and len(argv) == 2:
        got = _load(Path(argv[1]))
        wrong = {n: (f, got.get(n)) for n, f in declared_floors().items() if got.get(n) != f}
        for name, (floor, version) in wrong.items():
            print(f"floor env: {name} is {version}, the declared floor is {floor}", file=sys.stderr)
        return 1 if wrong else 0
    elif command == "table" and len(argv) >= 3:
        print(table(Path(argv[1]), argv[2:]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
