"""Parse time of dags/mlops_gpu_container.py on both runtimes vs the same DAG with stock operators.

Four DAG files, each parsed by Airflow's own DagBag (what the DAG processor runs):

- ``container/docker``      the example DAG, ``AIRFLOW__MLOPS__RUNTIME=docker``
- ``stock/docker``          the same DAG written with the stock ``DockerOperator``
- ``container/kubernetes``  the example DAG, ``AIRFLOW__MLOPS__RUNTIME=kubernetes``
- ``stock/kubernetes``      the same DAG written with the stock ``KubernetesPodOperator``

Two figures per file, each the median over several fresh interpreters (runs interleaved):

- **cold**: a fresh interpreter that has already imported Airflow parses the file once (the
  operator modules and their client libraries are imported by the DAG file itself);
- **warm**: the same interpreter parses the file again N times (modules already imported).

It also reports which client libraries ``operators.container`` pulls in for each runtime.

Bytecode: an installed deployment has ``.pyc`` files for Airflow, the providers and this
package (pip writes them at install time, the DAG processor on first import). By default the
children may write them (``PYTHONDONTWRITEBYTECODE`` is dropped) and one unmeasured round runs
first, so every variant imports compiled modules. ``--source`` keeps the caller's setting
instead: where no ``.pyc`` exists, every module is compiled from source on each import, on
both sides.
Target: container/stock <= 1.05. Usage: ``.venv/bin/python benchmarks/parse_time.py [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "dags" / "mlops_gpu_container.py"

STOCK_TEMPLATE = '''
"""The example DAG written with the stock {cls} (benchmark baseline)."""
from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

from {module} import {cls}

log = logging.getLogger(__name__)
TRIAL_SCRIPT = {script!r}
TRIALS = [(0.05, 1, "256Mi", "64Mi"), (0.2, 1, "512Mi", "128Mi")]


@dag(
    dag_id="mlops_gpu_container",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["mlops", "example", "gpu"],
    params={{
        "image": Param(os.environ.get("MLOPS_EXAMPLE_IMAGE", "mlops-base:bookworm"), type="string"),
        "gpus": Param(0, type="integer", minimum=0, description="GPUs per trial (0 = CPU)"),
        "steps": Param(200, type="integer", minimum=1),
        "namespace": Param("default", type="string", description="Kubernetes namespace"),
    }},
)
def mlops_gpu_container():
    @task
    def trials(params: dict | None = None) -> list[dict]:
        params = params or {{}}
        steps = int(params.get("steps", 200))
        return [
            {{{trial_kwargs}}}
            for i, (lr, cpus, memory, shm) in enumerate(TRIALS)
        ]

    results = {cls}.partial(
        task_id="trial",
        image="{{{{ params.image }}}}",
        {partial_kwargs}
    ).expand_kwargs(trials())

    @task
    def select_best(results: list[dict]) -> dict:
        best = min(results, key=lambda r: r["loss"])
        log.info("best trial %s", best["trial"])
        return best

    select_best(results.output)


mlops_gpu_container()
'''

STOCK = {
    "docker": {
        "module": "airflow.providers.docker.operators.docker",
        "cls": "DockerOperator",
        "trial_kwargs": '"environment": {"TRIAL": str(i), "LR": str(lr), "STEPS": str(steps)}, '
        '"mem_limit": memory.replace("Mi", "m"), "cpus": float(cpus)',
        "partial_kwargs": 'command=["python3", "-c", TRIAL_SCRIPT], shm_size=128 * 1024**2,',
    },
    "kubernetes": {
        "module": "airflow.providers.cncf.kubernetes.operators.pod",
        "cls": "KubernetesPodOperator",
        "trial_kwargs": '"env_vars": {"TRIAL": str(i), "LR": str(lr), "STEPS": str(steps)}, '
        '"labels": {"cpus": str(cpus), "memory": memory}',
        "partial_kwargs": 'arguments=["python3", "-c", TRIAL_SCRIPT], '
        'namespace="{{ params.namespace }}", image_pull_policy="IfNotPresent", do_xcom_push=True,',
    },
}

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import airflow.sdk  # the DAG processor has Airflow loaded before it parses a file
    from airflow.dag_processing.dagbag import DagBag
    path, repeats = sys.argv[1], int(sys.argv[2])
    def parse():
        t, c = time.perf_counter(), time.process_time()
        bag = DagBag(dag_folder=path, safe_mode=False)
        took = (time.perf_counter() - t, time.process_time() - c)
        assert not bag.import_errors and "mlops_gpu_container" in bag.dag_ids, bag.import_errors
        return took
    cold = parse()
    warm = sorted(parse() for _ in range(repeats))
    mods = sorted(m for m in ("docker", "kubernetes") if m in sys.modules)
    print(json.dumps({"cold": cold[1], "cold_wall": cold[0], "warm": sorted(w[1] for w in warm)[len(warm) // 2],
                      "warm_wall": warm[len(warm) // 2][0], "modules": mods}))
    """
)

IMPORT_CHECK = textwrap.dedent(
    """
    import json, sys
    from airflow_mlops_provider.operators.container import container_operator
    cls = container_operator()
    print(json.dumps({"class": cls.__name__,
                      "modules": sorted(m for m in ("docker", "kubernetes") if m in sys.modules)}))
    """
)

# What the provider adds on top of the stock operator's import, measured directly (less noisy
# than the difference of two cold parses on a busy machine).
OVERHEAD = textwrap.dedent(
    """
    import importlib, json, sys, time
    import airflow.sdk
    from airflow.dag_processing.dagbag import DagBag
    importlib.import_module(sys.argv[1])
    c = time.process_time()
    from airflow_mlops_provider.operators.container import container_operator
    container_operator()
    print(json.dumps({"overhead": time.process_time() - c}))
    """
)


def _run(code: str, *args: str, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per variant")
    parser.add_argument("--repeats", type=int, default=20, help="warm parses per interpreter")
    parser.add_argument(
        "--source", action="store_true", help="do not let the children write .pyc files (see the docstring)"
    )
    args = parser.parse_args()

    script = re.search(r'TRIAL_SCRIPT = """(.*?)"""', EXAMPLE.read_text(), re.S).group(1)
    tmp = Path(tempfile.mkdtemp(prefix="mlops-parse-bench-"))
    base_env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(REPO),
    }
    if not args.source:
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    files: dict[str, tuple[Path, dict[str, str]]] = {}
    for runtime, spec in STOCK.items():
        stock = tmp / f"stock_{runtime}" / "mlops_gpu_container.py"
        stock.parent.mkdir(parents=True)
        stock.write_text(STOCK_TEMPLATE.format(script=script, **spec))
        env = {**base_env, "AIRFLOW__MLOPS__RUNTIME": runtime}
        files[f"container/{runtime}"] = (EXAMPLE, env)
        files[f"stock/{runtime}"] = (stock, env)

    if not args.source:  # one unmeasured round: writes the .pyc files an installation has
        for path, env in files.values():
            _run(CHILD, str(path), "1", env=env)
    results: dict[str, list[dict]] = {name: [] for name in files}
    for _ in range(args.runs):  # interleaved, so load on the machine hits every variant alike
        for name, (path, env) in files.items():
            results[name].append(_run(CHILD, str(path), str(args.repeats), env=env))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"Parse time of {EXAMPLE.relative_to(REPO)} (DagBag, median of {args.runs} interpreters)")
    print(
        "modules: " + ("compiled from source on each import (--source)" if args.source else "from .pyc files")
    )
    print("CPU ms = time.process_time() of the parsing process (robust on a shared machine); wall ms too.")
    print(
        f"{'variant':22} {'cold CPU':>9} {'cold wall':>10} {'warm CPU':>9} {'warm wall':>10}  client modules"
    )
    for name in files:
        mods = ",".join(results[name][-1]["modules"]) or "-"
        print(
            f"{name:22} {median(name, 'cold') * 1e3:9.1f} {median(name, 'cold_wall') * 1e3:10.1f} "
            f"{median(name, 'warm') * 1e3:9.2f} {median(name, 'warm_wall') * 1e3:10.2f}  {mods}"
        )
    for runtime in STOCK:
        cold = median(f"container/{runtime}", "cold") / median(f"stock/{runtime}", "cold")
        warm = median(f"container/{runtime}", "warm") / median(f"stock/{runtime}", "warm")
        verdict = "OK" if max(cold, warm) <= 1.05 else "ABOVE TARGET"
        print(
            f"ratio container/stock on {runtime:10}: cold {cold:.3f}  warm {warm:.3f}  (target <= 1.05: {verdict})"
        )
    for runtime, spec in STOCK.items():
        env = {**base_env, "AIRFLOW__MLOPS__RUNTIME": runtime}
        extra = statistics.median(
            _run(OVERHEAD, spec["module"], env=env)["overhead"] for _ in range(args.runs)
        )
        share = extra / median(f"stock/{runtime}", "cold")
        print(
            f"provider import + container_operator() on top of {spec['cls']}'s import ({runtime}): "
            f"{extra * 1e3:.1f} ms CPU = {share:.1%} of the stock cold parse"
        )
    for runtime in STOCK:
        check = _run(IMPORT_CHECK, env={**base_env, "AIRFLOW__MLOPS__RUNTIME": runtime})
        other = "kubernetes" if runtime == "docker" else "docker"
        print(
            f"import operators.container + container_operator() with runtime={runtime}: "
            f"{check['class']}; client modules {check['modules']}; "
            f"{other!r} in sys.modules: {other in check['modules']}"
        )


if __name__ == "__main__":
    main()
