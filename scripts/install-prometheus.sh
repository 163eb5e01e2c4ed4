#!/usr/bin/env bash
# Install the distribution's Prometheus (prometheus + promtool) for slate's integration tests.
# Idempotent: does nothing when both commands are already on PATH.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo=$(command -v sudo || true)
  if [ -z "$sudo" ]; then
    echo "install-prometheus: prometheus/promtool missing and not root (no sudo); install the" \
         "'prometheus' package yourself" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends prometheus
# the package enables a system service; slate's tests run their own instance on a free port
command -v prometheus >/dev/null && command -v promtool >/dev/null
