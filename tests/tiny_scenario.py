"""A two-cluster, two-service scenario small enough to check by hand (shared by unit tests)."""

from __future__ import annotations

import copy
from typing import Any

_TINY: dict[str, Any] = {
    "name": "tiny",
    "clusters": ["west", "east"],
    "rtt_ms": {"west": {"east": 40}},
    "egress_usd_per_gb": {"default": 0.02, "west": {"east": 0.05}},
    "services": {
        "front": {
            "replicas": {"west": 2, "east": 1},
            "endpoints": {
                "home": {
                    "service_ms": 3,
                    "calls": [
                        {"to": "db.get", "per_request": 2, "request_kb": 1, "response_kb": 4}
                    ],
                }
            },
        },
        "db": {"replicas": {"west": 1}, "endpoints": {"get": {"service_ms": 1}}},
    },
    "ingress": [
        {
            "endpoint": "front.home",
            "rps": {"west": 100, "east": 50},
            "request_kb": 1,
            "response_kb": 9,
        }
    ],
}


def tiny(objective: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the tiny scenario file with `objective`."""
    return {**copy.deepcopy(_TINY), "objective": objective}
