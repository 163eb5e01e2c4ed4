#!/usr/bin/env bash
# The whole test suite: lint, types, unit + integration tests. Installs what it needs first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
"$root/scripts/install-prometheus.sh"   # the real Prometheus of the integration tests
cd "$root"
export PATH="$root/.venv/bin:$PATH"
echo "== ruff"; ruff check slate tests bench; ruff format --check -q slate tests bench
echo "== import layers"; lint-imports --no-cache --no-logo
echo "== mypy"; mypy slate tests bench
echo "== kube-apiserver (built once, cached)"; "$root/scripts/kube-apiserver.sh"
echo "== pytest"; pytest "$@"
