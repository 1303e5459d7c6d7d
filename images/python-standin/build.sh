#!/usr/bin/env bash
# Build the local stand-in for the official Python image (see Containerfile) when neither it nor the official
# image is present and no registry can be reached. Idempotent: does nothing when the image already exists.
#   images/python-standin/build.sh [podman|docker]
set -euo pipefail
engine="${1:-podman}"
target="docker.io/library/python:3.11-slim-bookworm"
here="$(cd "$(dirname "$0")" && pwd)"
if "$engine" image exists "$target" 2>/dev/null || "$engine" image inspect "$target" >/dev/null 2>&1; then
  echo "$target is present"; exit 0
fi
# podman on these machines: runc (crun refuses hybrid cgroups), lower ulimits, host network for apt.
opts=()
if [ "$engine" = podman ]; then
  opts=(--runtime runc)
fi
build_opts=(--network host --ulimit nofile=8192:8192 --ulimit nproc=4096:4096)
if ! "$engine" image exists localhost/debian:bookworm 2>/dev/null; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap bookworm (minbase) into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  tar -C "$rootfs" -c . | "$engine" import - localhost/debian:bookworm >/dev/null
fi
"$engine" "${opts[@]}" build "${build_opts[@]}" -t "$target" -f "$here/Containerfile" "$here"
