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

from collections.abc import Mapping, Sequence

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
    prep = _prepare(target, current, delta, local, min_local)
    if isinstance(prep, dict):
        return prep
    names, t, lo, hi = prep
    bounds = [(t[c], lo[c], hi[c]) for c in names]

    def total(tau: float) -> float:
        return sum(min(max(tc - tau, lc), hc) for tc, lc, hc in bounds)

    a, b = -1.0 - delta, 1.0 + delta  # total(a) >= 1 >= total(b)
    for _ in range(100):
        mid = (a + b) / 2
        if mid in (a, b):
            break  # a and b are adjacent floats: the rest of the 100 halvings change nothing
        if total(mid) > 1.0:
            a = mid
        else:
            b = mid
    return _finish(names, t, lo, hi, (a + b) / 2)


def _prepare(
    target: Mapping[str, float],
    current: Mapping[str, float],
    delta: float,
    local: str | None,
    min_local: float,
) -> dict[str, float] | tuple[list[str], dict[str, float], dict[str, float], dict[str, float]]:
    """project()'s set-up: the answer when there is nothing to bisect, else (names, target,
    lower and upper bounds)."""
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
    return names, t, lo, hi


def _finish(
    names: list[str], t: dict[str, float], lo: dict[str, float], hi: dict[str, float], tau: float
) -> dict[str, float]:
    x = {c: min(max(t[c] - tau, lo[c]), hi[c]) for c in names}
    s = sum(x.values())
    x = {c: v / s for c, v in x.items()}
    return {c: v for c, v in x.items() if v > 1e-9}


Problem = tuple[Mapping[str, float], Mapping[str, float], float, str | None, float]
"""project()'s arguments: (target, current, delta, local, min_local)."""


def project_many(problems: Sequence[Problem]) -> list[dict[str, float]]:
    """[project(*p) for p in problems], bit for bit, with the bisections of all of them run
    together on numpy arrays (the rollout projects every route key: ~2,400 at 10 clusters x 100
    services). Per problem the arithmetic is project()'s, in the same order: the sum over
    clusters is taken column by column, left to right, as Python's sum() does, with the shorter
    problems padded by clusters that add exactly 0; each bisection stops when project()'s
    would."""
    import numpy as np  # lazily: the rollout needs it, `slate --help` does not

    out: list[dict[str, float] | None] = [None] * len(problems)
    todo: list[tuple[int, list[str], dict[str, float], dict[str, float], dict[str, float]]] = []
    deltas: list[float] = []
    for i, (target, current, delta, local, min_local) in enumerate(problems):
        prep = _prepare(target, current, delta, local, min_local)
        if isinstance(prep, dict):
            out[i] = prep
        else:
            todo.append((i, *prep))
            deltas.append(delta)
    if todo:
        width = max(len(names) for _i, names, *_ in todo)
        t = np.zeros((len(todo), width))
        lo = np.zeros((len(todo), width))
        hi = np.zeros((len(todo), width))
        for row, (_i, names, tt, ll, hh) in enumerate(todo):
            for col, c in enumerate(names):
                t[row, col], lo[row, col], hi[row, col] = tt[c], ll[c], hh[c]
        d = np.array(deltas)
        a, b = -1.0 - d, 1.0 + d
        active = np.ones(len(todo), dtype=bool)
        for _ in range(100):
            mid = (a + b) / 2
            active &= (mid != a) & (mid != b)
            if not active.any():
                break
            x = np.minimum(np.maximum(t - mid[:, None], lo), hi)
            total = x[:, 0].copy()
            for col in range(1, width):
                total += x[:, col]
            above = total > 1.0
            a = np.where(active & above, mid, a)
            b = np.where(active & ~above, mid, b)
        taus = ((a + b) / 2).tolist()
        for row, (i, names, tt, ll, hh) in enumerate(todo):
            out[i] = _finish(names, tt, ll, hh, taus[row])
    return [x if x is not None else {} for x in out]


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
