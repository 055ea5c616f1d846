#!/usr/bin/env bash
# Build the local base image (Debian bookworm + python3) without a registry:
# debootstrap from the Debian mirror apt already uses, then `docker import`.
# Usage: build_base_image.sh [NAME:TAG]   (default mlops-base:bookworm). Idempotent.
set -euo pipefail
image=${1:-mlops-base:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image already present"; exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true) \
         | grep -E '^(URIs:|deb )' | grep -oE 'http://[^ ]+/debian/?' | grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,procps bookworm "$rootfs" "$mirror" >/tmp/debootstrap.log 2>&1 \
  || { tail -30 /tmp/debootstrap.log >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image"
echo "built $image"
