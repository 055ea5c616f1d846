#!/usr/bin/env bash
# Build the example trainer image offline: base image from a build arg, Python wheels from a
# wheelhouse downloaded on the host (containers cannot reach PyPI over https here).
# Usage: build_images.sh [BASE_IMAGE]   Idempotent; rebuilds when the trainer sources change.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-${BASE_IMAGE:-mlops-base:bookworm}}
uv=$(command -v uv || echo "$PWD/.tools/bin/uv")
if [ ! -x "$uv" ]; then
  echo "uv is needed: run 'make env' first (it installs uv into .tools/)" >&2; exit 1
fi
tag=${TRAINER_IMAGE:-mlops-trainer:latest}
wheels=.wheelhouse/trainer
# The versions the dev environment locks, so a model pickled in the container loads on the host.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$uv" export --frozen --no-hashes --all-extras --all-groups --no-emit-project 2>/dev/null | "$uv" run -q --no-project --python 3.11 --with packaging python -c '
import sys
from packaging.markers import Marker
env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
       "platform_machine": "x86_64", "platform_system": "Linux", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
for line in sys.stdin:
    line = line.strip()
    if "==" not in line or line.startswith("#"):
        continue
    req, _, marker = line.partition(";")
    if not marker.strip() or Marker(marker.strip()).evaluate(env):
        print(req.strip())
' >"$constraints"
sk=$(grep -E '^scikit-learn==' "$constraints" | head -1 || true)
mkdir -p "$wheels"
"$uv" tool run -q --python 3.11 --from pip pip download --quiet --only-binary=:all: --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp -c "$constraints" -d "$wheels" "${sk:-scikit-learn}" joblib
docker build --quiet --build-arg "BASE_IMAGE=$base" -f images/trainer/Dockerfile -t "$tag" . >/dev/null
echo "built $tag from $base with $(ls "$wheels" | wc -l) wheels"
