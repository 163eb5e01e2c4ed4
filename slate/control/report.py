"""What one interval of the loop did: `IntervalReport` (BRIEF interface 3) and its conditions.

Condition types and reasons (docs/control.md explains each):

  TelemetryFresh  True  Fresh                 the newest sample is recent enough
                  False PrometheusUnavailable the backend could not be reached
                  False Stale                 the newest sample is older than the staleness limit
                  False NoData                no traffic of the policy's services in the lookback
  Solved          True  Optimal               the optimizer found the target
                  True  OverCapacity          demand does not fit under maxUtilization: the least
                                              overloaded routing is the target
                  False Infeasible            trust region and limits admit no routing
                  False SolverFailed          HiGHS or the learning step failed
                  False NotRun                telemetry was not usable this interval
                  Unknown Solving             the target solve outlasted the interval's wait: it
                                              goes on in the worker, the next interval uses it
  Applied         True  Converged             the weights in force are the target
                  True  RollingOut            moved towards the target, at most maxShiftPerInterval
                  False Held                  the last good weights were kept (see held_reason)
                  False Solving               the weights in force stay while the target solve
                                              goes on in the worker (Solved=Unknown, Solving)
                  False DryRun                computed and reported, nothing published
                  False Paused                spec.paused: nothing published
                  False PublishFailed         a publisher raised (weights in force unchanged)
  Ready           True  Converged / RollingOut, or False with the reason of the first failing one
  Paused          True  Paused                (only when spec.paused)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from slate.model.routing import Prediction, Routing

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    status: Status
    reason: str
    message: str = ""

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Observed:
    """What the mesh measured this interval (mean end-to-end latency from the gateways' calls)."""

    mean_latency_ms: float | None
    egress_usd_per_hour: float | None


@dataclass(frozen=True)
class Timings:
    query_s: float = 0.0
    learn_s: float = 0.0
    solve_s: float = 0.0
    publish_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.query_s + self.learn_s + self.solve_s + self.publish_s


@dataclass(frozen=True)
class IntervalReport:
    policy: str  # "namespace/name"
    at: datetime
    conditions: Mapping[str, Condition]
    routes: Routing  # the weights in force after this interval (what proxies get)
    target: Routing | None  # the optimum being moved towards
    predicted: Prediction | None  # the learned model's figures for `routes`
    observed: Observed | None
    solve_seconds: float
    exploring: bool
    held_reason: str | None
    interval: int = 0
    max_weight_shift: float = 0.0
    publish_routes: bool = True  # False when paused or dry-run: route publishers skip
    generation: int | None = None
    timings: Timings = field(default_factory=Timings)
    problems: tuple[str, ...] = ()
    fit_r2: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """(service, cluster) -> R^2 of the station's curve fitted this interval (stations fitted
    from their own samples only; docs/operator.md exports it as `slate_fit_r2`)."""
    rollout_restarted: bool = False
    """This interval cleared the rollout's damping memory after a stall (loop.STALL_INTERVALS)."""
    target_from_background: bool = False
    """The target was solved in the worker from the previous interval's fits (loop.SolveMode)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", MappingProxyType(dict(self.conditions)))

    @property
    def ready(self) -> bool:
        c = self.conditions.get("Ready")
        return c is not None and c.status == "True"

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "interval": self.interval,
            "conditions": {k: v.to_json() for k, v in self.conditions.items()},
            "routes": self.routes.to_json()["routes"],
            "target_routes": None if self.target is None else self.target.to_json()["routes"],
            "predicted": None if self.predicted is None else self.predicted.to_json(),
            "observed": None
            if self.observed is None
            else {
                "mean_latency_ms": self.observed.mean_latency_ms,
                "egress_usd_per_hour": self.observed.egress_usd_per_hour,
            },
            "solve_seconds": round(self.solve_seconds, 4),
            "exploring": self.exploring,
            "rollout_restarted": self.rollout_restarted,
            "target_from_background": self.target_from_background,
            "held_reason": self.held_reason,
            "max_weight_shift": round(self.max_weight_shift, 6),
            "timings": {
                "query_s": round(self.timings.query_s, 4),
                "learn_s": round(self.timings.learn_s, 4),
                "solve_s": round(self.timings.solve_s, 4),
                "publish_s": round(self.timings.publish_s, 4),
            },
            "problems": list(self.problems),
            "fit_r2": [
                {"service": s, "cluster": c, "r2": round(v, 4)}
                for (s, c), v in sorted(self.fit_r2.items())
            ],
        }
