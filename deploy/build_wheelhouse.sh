#!/usr/bin/env bash
# Fill the git-ignored wheelhouse the stack images install from (containers cannot reach PyPI).
# Versions are the ones uv.lock pins; the few packages the lock does not hold (the PostgreSQL
# driver, the S3 stand-in, the build backend) are pinned here and resolved against the lock.
# Wheels are for CPython 3.11.2 on manylinux x86_64: Debian bookworm's python3 (markers such as
# python_full_version < '3.11.3' depend on the patch level).
# Usage: deploy/build_wheelhouse.sh [DIR]   (default .wheelhouse/stack). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.wheelhouse/stack}
uv_bin=$(command -v uv || echo .tools/bin/uv)
python=${PYTHON:-python3}
# Not in uv.lock: keep these pins in step with the README section "The full stack with docker-compose".
extra_pins=(
  "psycopg2-binary==2.9.13"   # PostgreSQL driver for Airflow's and MLflow's metadata
  "asyncpg==0.32.0"           # the async PostgreSQL driver Airflow 3 derives from the sync URI
  "moto[server]==5.2.5"       # moto_server: the S3-compatible artifact store
  "hatchling==1.33.0"         # build backend, to install this package from the repo offline
)
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The package's full closure with every extra (docker, kubernetes, mlflow, feast, aws), no dev tools.
"$uv_bin" export --frozen --no-hashes --all-extras --no-dev --no-emit-project >"$work/closure.txt"
# Every pin the lock knows (dev group too, e.g. Feast's redis extra):
# used as constraints only, so shared dependencies keep the locked versions.
"$uv_bin" export --frozen --no-hashes --all-extras --all-groups --no-emit-project >"$work/all.txt"
grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' "$work/all.txt" >"$work/constraints.txt"
# feast[redis] (the online store's client) is locked in the dev group only; redis needs
# async-timeout on Python < 3.11.3, which bookworm's 3.11.2 is.
mapfile -t online_pins < <(grep -E '^(redis|hiredis|async-timeout)==' "$work/constraints.txt" | sed 's/ *;.*//')
platform=(--only-binary=:all: --implementation cp --python-version 3.11.2 --abi cp311 --abi abi3 --abi none
          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any)
# pip evaluates environment markers against the interpreter running it, not the target: keep the
# lines whose markers hold on bookworm's python3 (3.11.2, Linux x86_64) and drop the markers.
"$python" - "$work/closure.txt" >"$work/closure-bookworm.txt" <<'PY'
import sys
try:
    from packaging.markers import Marker
except ImportError:
    from pip._vendor.packaging.markers import Marker
env = {"python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "sys_platform": "linux", "os_name": "posix",
       "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        continue
    requirement, _, marker = line.partition(";")
    if not marker.strip() or Marker(marker.strip()).evaluate(env):
        print(requirement.strip())
PY
"$python" -m pip download --quiet --disable-pip-version-check --no-deps "${platform[@]}" \
  -d "$dir" -r "$work/closure-bookworm.txt" "${online_pins[@]}"
"$python" -m pip download --quiet --disable-pip-version-check "${platform[@]}" \
  -d "$dir" -c "$work/constraints.txt" "${extra_pins[@]}"
# The images install with `pip --constraint`, so the lock decides versions inside them too.
grep -v "^psycopg2" "$work/constraints.txt" >"$dir/constraints.txt"
echo "wheelhouse $dir: $(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
