#!/usr/bin/env bash
# Install Debian's docker.io (if missing) and start dockerd with the stand-in NVIDIA hook on its PATH.
# Idempotent: does nothing when an engine already answers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if docker info >/dev/null 2>&1; then
  echo "docker engine already answers"; exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
hookdir=/usr/local/lib/mlops-ci-hook
mkdir -p "$hookdir"
install -m 0755 "$here/nvidia-container-runtime-hook" "$hookdir/nvidia-container-runtime-hook"
mkdir -p /var/log
PATH="$hookdir:$PATH" nohup dockerd >/var/log/mlops-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then echo "dockerd is up"; exit 0; fi
  sleep 1
done
echo "dockerd did not come up; log follows" >&2
tail -50 /var/log/mlops-dockerd.log >&2
exit 1
