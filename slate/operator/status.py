"""TrafficPolicy status (trafficpolicy.md) from what the control loop reported: pure functions.

`status_from_report` turns an IntervalReport into the status subresource's content; `invalid_status`
and `conflict_status` say why a policy is not acted on. Conditions have the metav1.Condition shape
and keep their `lastTransitionTime` while their status stays the same; `transitions` lists what
changed between two condition sets, for Kubernetes Events. A status is written as a JSON merge
patch (`merge_patch`), so fields that disappear are removed (set to null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slate.model.routing import Prediction, Routing
from slate.operator.seams import IntervalReportLike

CONDITION_ORDER = ("Ready", "TelemetryFresh", "Solved", "Applied", "Paused")
MAX_MESSAGE = 2000
"""Condition messages are clipped (they may quote client-supplied names)."""


@dataclass(frozen=True)
class Cond:
    """A condition as the operator sets it (the report's Condition has the same fields)."""

    status: str
    reason: str
    message: str = ""


def rfc3339(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def routes_json(routing: Routing | None) -> list[dict[str, Any]]:
    """Routes in the status shape: weights as a list of {cluster, weight}, normalised, sorted."""
    if routing is None:
        return []
    out = []
    for r in routing.routes:
        weights = r.normalized()
        out.append(
            {
                "fromService": r.from_service,
                "fromCluster": r.from_cluster,
                "to": r.to,
                "weights": [
                    {"cluster": c, "weight": round(w, 6)} for c, w in sorted(weights.items())
                ],
            }
        )
    return out


def _finite(**fields: float | None) -> dict[str, float]:
    return {k: round(v, 6) for k, v in fields.items() if v is not None and math.isfinite(v)}


def predicted_json(p: Prediction | None) -> dict[str, float] | None:
    if p is None:
        return None
    out = _finite(
        meanLatencyMs=p.mean_latency_ms,
        egressUsdPerHour=p.egress_usd_per_hour,
        maxUtilization=p.max_utilization,
    )
    return out or None


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None,
    new: Mapping[str, Cond],
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The new condition list: `new`'s types in CONDITION_ORDER (then others by name), keeping each
    one's lastTransitionTime when its status did not change. Types not in `new` are dropped."""
    previous = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    order = [t for t in CONDITION_ORDER if t in new] + sorted(
        t for t in new if t not in CONDITION_ORDER
    )
    out = []
    for t in order:
        c = new[t]
        before = previous.get(t)
        changed = before is None or before.get("status") != c.status
        since = (
            rfc3339(now)
            if before is None or changed
            else before.get("lastTransitionTime") or rfc3339(now)
        )
        cond: dict[str, Any] = {
            "type": t,
            "status": c.status,
            "reason": c.reason,
            "lastTransitionTime": since,
        }
        if c.message:  # omitted when empty: the Kubernetes client sends "" as null
            cond["message"] = clip(c.message)
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


def conditions_of(report: IntervalReportLike) -> dict[str, Cond]:
    return {
        t: Cond(str(c.status), str(c.reason), str(c.message or ""))
        for t, c in report.conditions.items()
    }


def status_from_report(
    report: IntervalReportLike,
    old: Mapping[str, Any] | None,
    generation: int | None,
    state_json: str | None = None,
) -> dict[str, Any]:
    """The whole status after one interval."""
    old = old or {}
    conds = conditions_of(report)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions"), conds, report.at, generation),
        "routes": routes_json(report.routes),
        "targetRoutes": routes_json(report.target),
    }
    solved = conds.get("Solved")
    if solved is not None and solved.status == "True":
        status["lastSolveTime"] = rfc3339(report.at)
        status["solveSeconds"] = round(report.solve_seconds, 4)
    else:  # held: the last solve stays the last solve
        status["lastSolveTime"] = old.get("lastSolveTime")
        status["solveSeconds"] = old.get("solveSeconds")
    predicted = predicted_json(report.predicted)
    status["predicted"] = predicted if predicted is not None else old.get("predicted")
    obs = report.observed
    observed = (
        None
        if obs is None
        else _finite(meanLatencyMs=obs.mean_latency_ms, egressUsdPerHour=obs.egress_usd_per_hour)
    )
    status["observed"] = observed or None
    if state_json is not None:
        status["state"] = state_json
    return status


def not_acted_status(
    old: Mapping[str, Any] | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    *,
    keep_routes: bool,
) -> dict[str, Any]:
    """Ready=False with `reason` (InvalidSpec, Conflict): the policy is not acted on.

    An invalid spec keeps the routes last published (the proxies keep them: no traffic jump);
    the loser of a conflict publishes nothing (the older policy's routes are the ones served)."""
    old = old or {}
    conds = {"Ready": Cond("False", reason, message)}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions"), conds, now, generation),
        "targetRoutes": None,
    }
    if not keep_routes:
        status["routes"] = None
    return status


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (top level: dropped keys become null)."""
    patch = dict(new)
    for key in old or {}:
        if key not in new:
            patch[key] = None
    return {k: v for k, v in patch.items() if (old or {}).get(k) != v or k not in (old or {})}


@dataclass(frozen=True)
class Transition:
    type: str
    """Event type: Normal or Warning."""
    reason: str
    message: str


def transitions(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    """Events for conditions whose status or reason changed (solved, applied, held because ...)."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        b = before.get(c["type"])
        if b is not None and b.get("status") == c["status"] and b.get("reason") == c["reason"]:
            continue
        ok = c["status"] == "True" or (c["type"] == "Paused")
        kind = "Normal" if ok or c["reason"] in ("DryRun", "Paused", "Solving") else "Warning"
        text = f"{c['type']}={c['status']}"
        if c.get("message"):
            text += f": {c['message']}"
        out.append(Transition(kind, c["reason"], clip(text, 1000)))
    return out
