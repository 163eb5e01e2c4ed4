"""Test driver: one operator replica (`slate.operator.app`).

    python run_operator.py '{"loop": "standin" | "real", "kubeconfig": ..., "prometheus": ..., ...}'
    (OperatorConfig fields; "loop" defaults to "standin")

The integration tests start replicas this way so they can be killed like real processes. With
"loop": "standin" the only difference from `slate operator` is the loop factory (the stand-in of
standin_loop.py, no Prometheus needed); with "real" it is `slate operator` itself (the default loop
factory: slate.control's ControlLoop reading Prometheus)."""

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
    fields = json.loads(sys.argv[1])
    real = fields.pop("loop", "standin") == "real"
    for name in ("tls_cert", "tls_key", "tls_client_ca", "identity_table"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    cfg = OperatorConfig(**fields, loop_factory=None if real else standin_factory)
    sys.exit(run(cfg))
