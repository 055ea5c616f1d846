#!/usr/bin/env bash
# Build every image of docker-compose.yml locally, with no registry: the base image (debootstrap,
# scripts/ci/build_base_image.sh) if missing, the wheelhouse if empty, then one image per
# Dockerfile under deploy/. Prints each image's build time and size.
# Usage: deploy/build_stack_images.sh [BASE_IMAGE]   (default mlops-base:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
export BASE_IMAGE=${1:-${BASE_IMAGE:-mlops-base:bookworm}}
bash scripts/ci/build_base_image.sh "$BASE_IMAGE"
if ! ls .wheelhouse/stack/*.whl >/dev/null 2>&1 || [ ! -s .wheelhouse/stack/constraints.txt ]; then
  bash deploy/build_wheelhouse.sh .wheelhouse/stack
fi
# Services that own a build (the Airflow services share airflow-init's image).
services=(postgres redis s3 mlflow airflow-init)
for service in "${services[@]}"; do
  start=$(date +%s)
  docker-compose build --quiet --force-rm "$service" >/dev/null
  image=$(docker-compose config | /usr/bin/python3 -c "import sys, yaml; print(yaml.safe_load(sys.stdin)['services']['$service']['image'])" 2>/dev/null || true)
  size=$(docker image inspect -f '{{.Size}}' "$image" 2>/dev/null || echo 0)
  printf '%-14s %-34s built in %4ss  %6s MB\n' "$service" "$image" "$(( $(date +%s) - start ))" "$(( size / 1000000 ))"
done
