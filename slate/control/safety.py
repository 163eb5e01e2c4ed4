"""Rollout safety: how far the weights in force may move towards the optimizer's target.

Per route key, the weights published next are the Euclidean projection of the target onto

    { x : x >= 0, sum x = 1, current - delta <= x <= current + delta, x_local >= min_local }

(delta = maxShiftPerInterval): the closest weights to the target that no proxy would see move by
more than delta, found by bisection on the simplex's multiplier. Clip-and-renormalise is not used:
renormalising after the clip can move a weight by more than delta and away from the target.

`min_local` (minLocalShare) applies where the destination runs in the caller's own cluster; a local
share below it is raised by at most delta per interval, like any other move.
"""

from __future__ import annotations

from collections.abc import Mapping

DEADBAND = 0.005
"""Moves smaller than this are not made: noise in the fits must not make the proxies' weights
jitter (and every change is an xDS push)."""


ROUNDING_MARGIN = 1e-5
"""How far under maxShiftPerInterval `limit_move` scales a move that the rounding pushed over."""


def project(
    target: Mapping[str, float],
    current: Mapping[str, float],
    delta: float,
    local: str | None = None,
    min_local: float = 0.0,
) -> dict[str, float]:
    """The weights closest to `target` within `delta` of `current` per cluster, on the simplex,
    with at least `min_local` (moved towards by at most delta) on `local` when it is a candidate.
    Both mappings are normalised shares; clusters missing from one are 0 there. `local` must be a
    cluster running the destination (the caller checks)."""
    names = sorted(set(target) | set(current) | ({local} if local and min_local > 0 else set()))
    t = {c: max(float(target.get(c, 0.0)), 0.0) for c in names}
    w = {c: max(float(current.get(c, 0.0)), 0.0) for c in names}
    tw = sum(w.values())
    if tw <= 0:
        return _normalised(t)
    w = {c: v / tw for c, v in w.items()}
    tt = sum(t.values())
    t = {c: v / tt for c, v in t.items()} if tt > 0 else dict(w)
    lo = {c: max(0.0, w[c] - delta) for c in names}
    hi = {c: min(1.0, w[c] + delta) for c in names}
    if local is not None and local in names and min_local > 0:
        lo[local] = min(max(lo[local], min_local), hi[local])
        # The others give way: their upper bounds leave room for the local floor.
    if sum(lo.values()) > 1.0 + 1e-12 or sum(hi.values()) < 1.0 - 1e-12:
        return dict(w)  # cannot happen for current in the box; keep what is in force

    def total(tau: float) -> float:
        return sum(min(max(t[c] - tau, lo[c]), hi[c]) for c in names)

    a, b = -1.0 - delta, 1.0 + delta  # total(a) >= 1 >= total(b)
    for _ in range(100):
        mid = (a + b) / 2
        if total(mid) > 1.0:
            a = mid
        else:
            b = mid
    tau = (a + b) / 2
    x = {c: min(max(t[c] - tau, lo[c]), hi[c]) for c in names}
    s = sum(x.values())
    x = {c: v / s for c, v in x.items()}
    return {c: v for c, v in x.items() if v > 1e-9}


def limit_move(
    current: Mapping[str, float], new: Mapping[str, float], delta: float
) -> dict[str, float]:
    """`new`, or when it moves some share by more than `delta` from `current` (rounding to the
    published precision and renormalising can add a few millionths), the same move scaled back
    to `delta` less a margin for that rounding. Both are normalised shares."""
    shift = max_shift(current, new)
    if shift <= delta + 1e-9:  # float noise of a full step is not a violation
        return dict(new)
    f = max(delta - ROUNDING_MARGIN, 0.0) / shift
    names = sorted(set(current) | set(new))
    out = {c: current.get(c, 0.0) + f * (new.get(c, 0.0) - current.get(c, 0.0)) for c in names}
    return {c: round(v, 6) for c, v in out.items() if v >= 1e-6}


def max_shift(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """The largest change of any cluster's share between two weight maps."""
    return max((abs(a.get(c, 0.0) - b.get(c, 0.0)) for c in set(a) | set(b)), default=0.0)


def settle(
    target: Mapping[str, float], current: Mapping[str, float], deadband: float = DEADBAND
) -> bool:
    """True when the target is within the deadband of the weights in force (no move)."""
    return max_shift(_normalised(target), _normalised(current)) < deadband


def _normalised(w: Mapping[str, float]) -> dict[str, float]:
    s = sum(v for v in w.values() if v > 0)
    return {c: v / s for c, v in w.items() if v > 0} if s > 0 else {}
