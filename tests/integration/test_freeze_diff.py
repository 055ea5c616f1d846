"""Installing the provider into an existing Airflow deployment moves nothing already installed.

Builds a real virtualenv with Airflow and the docker + cncf-kubernetes providers (what a platform
team already runs), freezes it, installs this package with all its extras, freezes again and
diffs. Packages may be added; none may change version or disappear.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPLOYMENT = [
    "apache-airflow==3.3.2",
    "apache-airflow-providers-docker",
    "apache-airflow-providers-cncf-kubernetes",
]


def _uv() -> str:
    # On PATH, beside the interpreter, or where `make env` installs it (.tools/bin).
    found = (
        shutil.which("uv")
        or shutil.which("uv", path=os.path.dirname(sys.executable))
        or shutil.which("uv", path=str(REPO_ROOT / ".tools" / "bin"))
    )
    if not found:
        pytest.fail("uv is needed for the freeze-diff test (`make env` installs it in .tools/bin)")
    return found


def _freeze(uv: str, python: str) -> dict[str, str]:
    out = subprocess.run(
        [uv, "pip", "freeze", "--python", python], check=True, capture_output=True, text=True
    ).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
        elif " @ " in line:  # installed from a path or URL
            name, version = line.split(" @ ", 1)
        else:
            continue
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


#: Upper pins of third-party libraries that our extras pull in. A deployment built without
#: Airflow's constraints file gets the newest releases, above these caps, so installing the
#: extra downgrades them. None of these pins is ours; the README lists them.
THIRD_PARTY_CAPS = {
    "python-dateutil": "botocore (extra aws) requires python-dateutil<3",
    "cachetools": "mlflow-skinny (extra mlflow) requires cachetools<8",
    "importlib-metadata": "mlflow-skinny (extra mlflow) requires importlib-metadata<10",
    "tenacity": "feast (extra feast) requires tenacity<9",
}


def _install(uv: str, python: str, spec: str) -> None:
    subprocess.run([uv, "pip", "install", "-q", "--python", python, spec], check=True, timeout=900)


def test_installing_the_provider_moves_nothing_already_installed(tmp_path, report_figure):
    uv = _uv()
    venv = tmp_path / "deployment"
    subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "-q", "--python", python, *DEPLOYMENT], check=True, timeout=900)
    before = _freeze(uv, python)
    assert "apache-airflow" in before

    # The package itself and the runtime extras a deployment with those providers needs.
    _install(uv, python, f"{REPO_ROOT}[docker,kubernetes]")
    after_core = _freeze(uv, python)
    moved_core = {n: (v, after_core.get(n)) for n, v in before.items() if after_core.get(n) != v}
    assert moved_core == {}, f"installing airflow-mlops-provider[docker,kubernetes] moved: {moved_core}"
    assert "airflow-mlops-provider" in after_core

    # Every extra: only the documented third-party caps may move, and only downwards.
    _install(uv, python, f"{REPO_ROOT}[all]")
    after = _freeze(uv, python)
    moved = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    unexplained = {n: m for n, m in moved.items() if n not in THIRD_PARTY_CAPS}
    added = sorted(set(after) - set(before))
    report_figure(
        f"freeze diff: {len(before)} packages in the deployment; [docker,kubernetes] moved 0; "
        f"[all] added {len(added)} and moved {len(moved)} through third-party caps "
        + ", ".join(f"{n} {a}->{b}" for n, (a, b) in sorted(moved.items()))
    )
    assert unexplained == {}, (
        f"installing airflow-mlops-provider[all] moved installed packages: {unexplained}"
    )
    assert {"mlflow", "feast", "boto3"} <= set(after)

    # The installed provider registers itself in that environment too.
    proc = subprocess.run(
        [
            python,
            "-c",
            "from airflow_mlops_provider.get_provider_info import get_provider_info as g; print(g()['package-name'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "airflow-mlops-provider"

    # The plugin's templates and assets travel inside the wheel: the installed copy (not this
    # checkout) renders a page and serves its stylesheet.
    check = (
        "import airflow_mlops_provider.plugins as p, pathlib, sys\n"
        "root = pathlib.Path(p.__file__).parent\n"
        "assert 'site-packages' in str(root), root\n"
        "assert (root / 'static' / 'mlops.css').read_text().strip()\n"
        "assert (root / 'static' / 'icon.svg').read_text().startswith('<svg')\n"
        "from airflow_mlops_provider.plugins.render import page\n"
        "html = page('error.html', title='T', status=404, message='<b>x</b>').body.decode()\n"
        "assert '&lt;b&gt;x&lt;/b&gt;' in html and '/mlops/assets/mlops.css' in html, html\n"
        "print(sorted(f.name for f in (root / 'templates').iterdir()))\n"
    )
    proc = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "base.html" in proc.stdout
    assert "error.html" in proc.stdout
