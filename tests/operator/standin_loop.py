"""A stand-in control loop (named as such): what slate.control.ControlLoop reports, without
telemetry or solving, so the operator's handler logic can be tested on its own.

Each step moves every route from the state in force towards an even split over the policy's
clusters by at most maxShiftPerInterval (as the real loop's rollout does), and reports the
conditions the real loop does (Paused when spec.paused, Applied=False DryRun for dryRun). Its state
(`to_json`) is the weights in force and the interval count, so a resumed loop continues from them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slate.model.policy import TrafficPolicy
from slate.model.routing import Prediction, Route, Routing


@dataclass(frozen=True)
class Cond:
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Obs:
    mean_latency_ms: float | None
    egress_usd_per_hour: float | None


@dataclass(frozen=True)
class Report:
    policy: str
    at: datetime
    conditions: Mapping[str, Cond]
    routes: Routing
    target: Routing | None
    predicted: Prediction | None
    observed: Obs | None
    solve_seconds: float
    exploring: bool
    held_reason: str | None
    publish_routes: bool = True
    fit_r2: Mapping[tuple[str, str], float] = field(default_factory=dict)
    rollout_restarted: bool = False


@dataclass
class State:
    weights: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    interval: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": "standin",
                "interval": self.interval,
                "weights": [[list(k), w] for k, w in sorted(self.weights.items())],
            }
        )

    @staticmethod
    def from_json(text: str) -> State:
        data = json.loads(text)
        return State(
            {(k[0], k[1], k[2]): dict(w) for k, w in data["weights"]}, int(data["interval"])
        )


class StandinLoop:
    """Stand-in for slate.control.ControlLoop (same constructor shape, same report fields)."""

    def __init__(
        self,
        policy: TrafficPolicy,
        publishers: Sequence[Any] = (),
        state_json: str | None = None,
        *,
        start: Mapping[str, float] | None = None,
        fail_with: BaseException | None = None,
    ) -> None:
        self.policy = policy
        self.publishers = list(publishers)
        self.state = State.from_json(state_json) if state_json else State()
        self.resumed = state_json is not None
        self.start = dict(start or {policy.clusters[0].name: 1.0})
        self.fail_with = fail_with
        self.steps = 0
        self.closed = False
        self._lock = threading.Lock()

    def update_policy(self, policy: TrafficPolicy) -> None:
        with self._lock:
            self.policy = policy

    def close(self) -> None:
        self.closed = True

    def step(self, at: datetime | None = None) -> Report:
        with self._lock:
            policy = self.policy
        if self.fail_with is not None:
            raise self.fail_with
        self.steps += 1
        st = self.state
        st.interval += 1
        clusters = [c.name for c in policy.clusters]
        even = {c: 1.0 / len(clusters) for c in clusters}
        target, now = [], []
        for svc in policy.services:
            for frm in clusters:
                key = ("ingress", frm, svc.name)
                cur = st.weights.get(key) or {c: self.start.get(c, 0.0) for c in clusters}
                if not policy.paused:
                    cur = _towards(cur, even, policy.max_shift_per_interval)
                st.weights[key] = cur
                now.append(Route(*key, cur))
                target.append(Route(*key, even))
        routes = Routing(tuple(now))
        converged = all(abs(r.weights.get(c, 0) - even[c]) < 1e-9 for r in now for c in clusters)
        applied = (
            Cond("False", "Paused", "spec.paused")
            if policy.paused
            else Cond("False", "DryRun", "dryRun: nothing published")
            if policy.output == "dryRun"
            else Cond("True", "Converged" if converged else "RollingOut")
        )
        conds = {
            "Ready": Cond(applied.status, applied.reason, applied.message),
            "TelemetryFresh": Cond("True", "Fresh"),
            "Solved": Cond("True", "Optimal"),
            "Applied": applied,
        }
        if policy.paused:
            conds["Paused"] = Cond("True", "Paused", "spec.paused is true")
        report = Report(
            policy=policy.key,
            at=at or datetime.now(UTC),
            conditions=conds,
            routes=routes,
            target=Routing(tuple(target)),
            predicted=Prediction(40.0 + st.interval, 0.25, 0.5),
            observed=Obs(44.0, None),
            solve_seconds=0.01,
            exploring=st.interval == 1,
            held_reason=None,
            rollout_restarted=st.interval == 1,
            publish_routes=not policy.paused and policy.output != "dryRun",
            fit_r2={(policy.services[0].name, clusters[0]): 0.93},
        )
        for p in self.publishers:
            p.publish(report)
        return report


def _towards(cur: Mapping[str, float], goal: Mapping[str, float], step: float) -> dict[str, float]:
    out = {}
    for c, g in goal.items():
        x = cur.get(c, 0.0)
        out[c] = x + max(-step, min(step, g - x))
    total = sum(out.values())
    return {c: w / total for c, w in out.items()}


def standin_factory(
    policy: TrafficPolicy, publishers: Sequence[Any], state_json: str | None
) -> StandinLoop:
    return StandinLoop(policy, publishers, state_json)
