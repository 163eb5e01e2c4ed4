"""Extra limits a caller puts on the LP: route-weight bounds and linear rows over call rates.

The control loop needs two kinds (issue 6): how far each route's weights may move this interval
(the rollout limit, `maxShiftPerInterval`) and how much stays local (`minLocalShare`), both bounds
on a weight `y[k, d] / sum_d' y[k, d']`; and how far each station's work may go (the trusted range
of a fitted curve, passed to solve() as `work_bounds`). A weight bound is linear in the call rates
once multiplied by the key's total (the total is itself a variable for keys below the ingress):

    lo * sum_d' y[k, d']  <=  y[k, d]  <=  hi * sum_d' y[k, d']

`RateRow` is the general form, any `sum coef * y[k, d] <= upper` (calls per second), for limits
that are neither.

A key that carries no traffic satisfies every weight bound in the LP; solve() still prints it
weights inside its bounds (nearest clusters first), so a printed routing never breaks them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from slate.model.keys import RouteKey


@dataclass(frozen=True)
class WeightBound:
    """`lo <= weight of cluster on key <= hi`, the weight being that cluster's share of the key."""

    key: RouteKey
    cluster: str
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"weight bound on {_name(self.key)} -> {self.cluster}: not finite")


@dataclass(frozen=True)
class RateRow:
    """`sum of coef * y[key, cluster] over terms <= upper`, in calls per second."""

    terms: tuple[tuple[RouteKey, str, float], ...]
    upper: float
    name: str = ""  # named in errors


Constraint = WeightBound | RateRow


def _name(key: RouteKey) -> str:
    return f"{key.from_service}@{key.from_cluster} -> {key.to}"


def feasible_shares(
    preferred: list[str], lo: dict[str, float], hi: dict[str, float]
) -> dict[str, float] | None:
    """Weights summing to 1 inside [lo, hi] per cluster of `preferred` (nearest first): every
    cluster at its lower bound, the rest filled nearest first up to the upper bounds. None when
    no such weights exist."""
    w = {c: max(lo.get(c, 0.0), 0.0) for c in preferred}
    left = 1.0 - sum(w.values())
    if left < -1e-9:
        return None
    for c in preferred:
        if left <= 0:
            break
        take = min(left, min(hi.get(c, 1.0), 1.0) - w[c])
        if take > 0:
            w[c] += take
            left -= take
    if left > 1e-9:
        return None
    return {c: v for c, v in w.items() if v > 0}


def weight_bounds_by_key(
    constraints: Iterable[Constraint],
) -> dict[RouteKey, tuple[dict[str, float], dict[str, float]]]:
    """Key -> (lower bounds, upper bounds) per destination cluster, the tightest of each."""
    out: dict[RouteKey, tuple[dict[str, float], dict[str, float]]] = {}
    for c in constraints:
        if isinstance(c, WeightBound):
            lo, hi = out.setdefault(c.key, ({}, {}))
            lo[c.cluster] = max(lo.get(c.cluster, 0.0), c.lo)
            hi[c.cluster] = min(hi.get(c.cluster, 1.0), c.hi)
    return out
