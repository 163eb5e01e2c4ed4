"""Test driver: one operator replica (`slate.operator.app`) with the stand-in control loop.

    python run_operator.py '{"kubeconfig": ..., "prometheus": ..., ...}'   (OperatorConfig fields)

The integration tests start replicas this way so they can be killed like real processes; the only
difference from `slate operator` is the loop factory (no Prometheus needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standin_loop import standin_factory

from slate.logs import configure
from slate.operator.app import OperatorConfig, run

if __name__ == "__main__":
    configure("info")
    cfg = OperatorConfig(**json.loads(sys.argv[1]), loop_factory=standin_factory)
    sys.exit(run(cfg))
