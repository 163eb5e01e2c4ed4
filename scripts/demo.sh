#!/usr/bin/env bash
# slate's main job on embedded defaults. For now: solve and compare every policy on a bundled
# scenario, then run the control loop against it as hidden truth (it sees only simulated Istio
# telemetry). (The multi-region demo with real Envoy proxies replaces this in a later issue.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
scenario=${1:-$root/examples/scenarios/boutique-2r.yaml}
"$root/.venv/bin/slate" solve "$scenario" --format table
"$root/.venv/bin/slate" simulate "$scenario"
"$root/.venv/bin/slate" simulate "$scenario" --closed-loop --intervals 20 --format table
