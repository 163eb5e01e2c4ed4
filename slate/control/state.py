"""The loop's memory between intervals, saved as JSON so a restart resumes without a traffic jump:
the weights in force (what the proxies have), the last good fits, the service-time estimates and
the exploration book-keeping."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slate.control.publishers import write_atomic
from slate.learn.curves import FittedStation
from slate.model.routing import Routing, routing_from_json

VERSION = 1


@dataclass
class LoopState:
    weights: Routing = field(default_factory=lambda: Routing(()))
    """The weights in force (external endpoint ids, as published)."""
    curves: dict[tuple[str, str], FittedStation] = field(default_factory=dict)
    service_ms: dict[str, float] = field(default_factory=dict)
    interval: int = 0
    last_observed_ms: float | None = None
    before_exploring: Routing | None = None
    """The weights before the last exploring move (what a rollback returns to)."""
    cooldown: int = 0  # intervals left without exploration after a rollback
    target: Routing | None = None
    """The target being moved towards (kept while a new one is not clearly better)."""
    directions: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    """Per weight (from service, from cluster, to, cluster): the sign of its last move."""
    probed: dict[tuple[str, str], int] = field(default_factory=dict)
    """Cluster pairs of unmeasured RTT probed, and the interval of the last probe."""
    step_limits: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """Per route key: the most its weights may move next (<= maxShiftPerInterval)."""
    stalled: int = 0
    """Intervals in a row the rollout has not moved while far from its target (loop.py)."""
    still: int = 0
    """Intervals in a row the weights have not moved (a move from rest needs more evidence)."""

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "version": VERSION,
            "interval": self.interval,
            "weights": self.weights.to_json()["routes"],
            "curves": [
                {"service": s, "cluster": c, **f.to_json()}
                for (s, c), f in sorted(self.curves.items())
            ],
            "service_ms": dict(sorted(self.service_ms.items())),
            "last_observed_ms": self.last_observed_ms,
            "before_exploring": None
            if self.before_exploring is None
            else self.before_exploring.to_json()["routes"],
            "cooldown": self.cooldown,
            "target": None if self.target is None else self.target.to_json()["routes"],
            "directions": [[*k, v] for k, v in sorted(self.directions.items())],
            "step_limits": [[*k, v] for k, v in sorted(self.step_limits.items())],
            "probed": [[*k, v] for k, v in sorted(self.probed.items())],
            "stalled": self.stalled,
            "still": self.still,
        }
        return json.dumps(data, indent=1)

    @staticmethod
    def from_json(text: str) -> LoopState:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a slate loop state (version {VERSION})")
        curves = {
            (str(d["service"]), str(d["cluster"])): FittedStation.from_json(d)
            for d in data.get("curves", [])
        }
        before = data.get("before_exploring")
        target = data.get("target")
        return LoopState(
            weights=routing_from_json({"routes": data.get("weights", [])}),
            curves=curves,
            service_ms={str(k): float(v) for k, v in data.get("service_ms", {}).items()},
            interval=int(data.get("interval", 0)),
            last_observed_ms=data.get("last_observed_ms"),
            before_exploring=None if before is None else routing_from_json({"routes": before}),
            cooldown=int(data.get("cooldown", 0)),
            target=None if target is None else routing_from_json({"routes": target}),
            directions={
                (str(d[0]), str(d[1]), str(d[2]), str(d[3])): 1 if int(d[4]) > 0 else -1
                for d in data.get("directions", [])
            },
            probed={(str(d[0]), str(d[1])): int(d[2]) for d in data.get("probed", [])},
            step_limits={
                (str(d[0]), str(d[1]), str(d[2])): float(d[3]) for d in data.get("step_limits", [])
            },
            stalled=int(data.get("stalled", 0)),
            still=int(data.get("still", 0)),
        )

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), self.to_json())

    @staticmethod
    def load(path: str | Path) -> LoopState:
        return LoopState.from_json(Path(path).read_text(encoding="utf-8"))
