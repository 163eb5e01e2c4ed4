"""Each station's latency-vs-load curve, learned from (load, own latency) samples.

A station's load is its work rate w (ms of service per second, latency.py), and its queueing cost
q(w) = rps * (own latency - mean service time) request-ms per second. The learned curve is a shape,
not two M/M/c parameters (the true service time may itself rise with utilisation):

    q(w) = a * Lq_c(rho) + b * rho^3,    rho = w / capacity,   a, b >= 0

convex and increasing on [0, capacity) (sums and products of non-negative, increasing, convex
functions), zero at zero, with a pole at `capacity`. For each (k, capacity) on a grid, a and b are
the non-negative least-squares fit of the per-request wait; the best (k, capacity) wins, ties to
the larger capacity. `valid_up_to` is the largest work measured: beyond it the curve is an
extrapolation, and the control loop only lets the optimizer step a bounded distance past it.

Base service times are not known to the loop (it never reads a scenario):
`fit_class_service_times` learns them per endpoint class from each class's own time (within-sample
differences between classes, and the level of the least-loaded cluster's lightest samples);
`fit_service_times`, the low-load intercept of the station's own latency on the endpoint mix,
stands in where the class times are not in the telemetry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from slate.model.latency import MMcStation, mmc_costs_and_slopes

FArray = npt.NDArray[np.float64]

CAPACITY_FACTORS: FArray = np.array(
    [
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.95,
        1.0,
        1.02,
        1.05,
        1.1,
        1.15,
        1.2,
        1.3,
        1.4,
        1.5,
        1.65,
        1.8,
        2.0,
        2.3,
        2.6,
        3.0,
        3.5,
        4.0,
        5.0,
        6.5,
        8.0,
        10.0,
    ]
)
"""Capacity candidates, as multiples of the largest work measured. Below 1: the busiest samples
were overloaded (a station past saturation is just very slow, its latency no longer a function of
its load): the fit reads them as RHO_SATURATED."""
RHO_SATURATED = 0.98
SERVERS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
"""Queue shapes: the mean queue length of M/M/c for these c (scaled freely)."""
UNIT_SCALE = 1000.0
"""q = 1000 * mean queue length (request-ms per second, Little's law) in any M/M/c: the scale a
well-sized curve has, used to break ties between shapes the data cannot tell apart."""
PRIOR_WEIGHT = 1.0
TIE_WEIGHT = 0.001
UNTRUSTED_CAPACITY_FACTOR = 10.0
"""A station that never queued measurably: capacity assumed this many times its largest work."""


def queue_shape(c: int, rho: FArray) -> FArray:
    """Mean queue length of M/M/c at utilisation rho (vectorised), inf at rho >= 1."""
    rho = np.asarray(rho, dtype=float)
    a = c * np.clip(rho, 0.0, None)
    b = np.ones_like(a)
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    with np.errstate(divide="ignore", invalid="ignore"):
        erl = b / (1.0 - rho * (1.0 - b))
        out = np.where(rho < 1.0, rho * erl / (1.0 - rho), np.inf)
    return np.asarray(out, dtype=float)


def _queue_shapes(rho: FArray) -> FArray:
    """`queue_shape(c, rho)` for every c of SERVERS at once: shape (len(SERVERS), *rho.shape[1:])
    for rho of shape (1, ...). The Erlang-B recursion runs once up to the largest c, on the
    shapes still short of their own c only (SERVERS ascends); the same arithmetic as
    `queue_shape`, so the same figures."""
    r = np.clip(rho, 0.0, None)
    cs = np.array(SERVERS, dtype=float).reshape((-1,) + (1,) * (rho.ndim - 1))
    a = cs * r  # offered load of each shape
    b = np.ones_like(a)
    first = 0  # shapes [first:] still need more steps
    for k in range(1, SERVERS[-1] + 1):
        ab = a[first:] * b[first:]
        b[first:] = ab / (k + ab)
        while first < len(SERVERS) and SERVERS[first] == k:
            first += 1
    with np.errstate(divide="ignore", invalid="ignore"):
        erl = b / (1.0 - r * (1.0 - b))
        res = np.where(r < 1.0, r * erl / (1.0 - r), np.inf)
    return np.asarray(res, dtype=float)


TABLE_POINTS = 1 << 15
"""Points of the `_queue_shapes` table over [0, RHO_SATURATED] that the fit interpolates."""
_table: FArray | None = None


def _queue_shapes_interpolated(rho: FArray) -> FArray:
    """`_queue_shapes(rho[None])` for rho in [0, RHO_SATURATED], linearly interpolated in a table
    computed once (TABLE_POINTS per shape, 2.6 MB): within 6e-7 of the exact figures wherever they
    exceed 1e-3 (2e-5 absolute), and a quarter of the time (0.13 against 0.48 ms for one fit's
    31 capacities x 61 samples). The exact recursion was a third of the learn phase at 10 clusters
    x 100 services with a full lookback; only the fit's search over candidate curves uses this, the
    fitted curve itself is exact (`FittedStation`)."""
    global _table
    if _table is None:
        _table = _queue_shapes(np.linspace(0.0, RHO_SATURATED, TABLE_POINTS)[None, :])
    pos = np.clip(rho, 0.0, RHO_SATURATED) * ((TABLE_POINTS - 1) / RHO_SATURATED)
    lo = np.minimum(pos.astype(np.intp), TABLE_POINTS - 2)
    frac = pos - lo
    below = _table[:, lo]
    return np.asarray(below + (_table[:, lo + 1] - below) * frac, dtype=float)


@dataclass(frozen=True)
class FittedStation:
    """A learned station curve, a frozen, hashable StationModel (slate/model/latency.py):

        q(w) = a * Lq_c(rho) + b * rho^3,   rho = w / capacity

    with Lq_c the mean queue length of M/M/c (a shape picked from SERVERS) and b a smooth term
    for service times that rise with load."""

    capacity: float  # work (ms/s) at the pole
    a: float
    c: int
    b: float
    valid_up_to: float  # largest work measured (ms/s): the curve is trusted up to here
    samples: int = 0
    rmse_ms: float = 0.0  # root mean square error of the per-request wait fit
    r2: float = field(default=math.nan, compare=False)
    """Coefficient of determination of the wait fit (weighted as the fit is): 1 is perfect, 0 no
    better than the mean wait; NaN when nothing was fitted (no queueing measured, or a prior)."""

    def queue_cost(self, work: float) -> float:
        w = max(work, 0.0)
        if w >= self.capacity:
            return math.inf
        rho = w / self.capacity
        lq = MMcStation(self.c).queue_cost(rho * 1000.0 * self.c) / 1000.0 if self.a else 0.0
        return self.a * lq + self.b * rho**3

    def queue_slope(self, work: float) -> float:
        w = max(work, 0.0)
        if w >= self.capacity:
            return math.inf
        rho = w / self.capacity
        dlq = self.c * MMcStation(self.c).queue_slope(rho * 1000.0 * self.c) if self.a else 0.0
        return (self.a * dlq + 3.0 * self.b * rho * rho) / self.capacity

    def costs_and_slopes(self, works: Sequence[float]) -> tuple[list[float], list[float]]:
        """queue_cost and queue_slope at many points at once (the optimizer's first tangents):
        the same arithmetic on numpy arrays."""
        w = np.maximum(np.asarray(works, dtype=float), 0.0)
        rho = w / self.capacity
        if self.a:
            lq, dlq = mmc_costs_and_slopes(self.c, (rho * 1000.0 * self.c).tolist())
            cost = self.a * (np.asarray(lq) / 1000.0)
            slope = self.a * (self.c * np.asarray(dlq))
        else:
            cost = slope = np.zeros_like(rho)
        cost = cost + self.b * rho**3
        slope = (slope + 3.0 * self.b * rho * rho) / self.capacity
        over = w >= self.capacity
        cost[over] = math.inf
        slope[over] = math.inf
        return cost.tolist(), slope.tolist()

    @property
    def kind(self) -> str:
        return "erlang-shape"

    def to_json(self) -> dict[str, float | int]:
        return {
            "capacity": self.capacity,
            "a": self.a,
            "c": self.c,
            "b": self.b,
            "valid_up_to": self.valid_up_to,
            "samples": self.samples,
            "rmse_ms": self.rmse_ms,
        }

    @staticmethod
    def from_json(d: Mapping[str, float | int]) -> FittedStation:
        return FittedStation(
            capacity=float(d["capacity"]),
            a=float(d["a"]),
            c=int(d["c"]),
            b=float(d["b"]),
            valid_up_to=float(d["valid_up_to"]),
            samples=int(d.get("samples", 0)),
            rmse_ms=float(d.get("rmse_ms", 0.0)),
        )

    def scaled(self, factor: float) -> FittedStation:
        """The same shape for a station `factor` times as big (a prior for an unmeasured one)."""
        return FittedStation(self.capacity * factor, self.a, self.c, self.b, 0.0, 0, self.rmse_ms)


def fit_station(
    work: FArray, rps: FArray, wait_ms: FArray, own_ms: FArray | None = None
) -> FittedStation | None:
    """Fit one station from samples of its work (ms/s), request rate and per-request wait (own
    latency minus mean service time, ms). Residuals are relative to the own latency `own_ms`
    (default: the wait plus the mean service time), so a few overloaded samples do not outweigh
    the rest. None when no sample carries load. `fit_stations` fits many at once."""
    return fit_stations([(work, rps, wait_ms, own_ms)])[0]


Samples = tuple[FArray, FArray, FArray, FArray | None]
"""(work, rps, wait_ms, own_ms) of one station, as `fit_station` takes them."""
BATCH = 16
"""Stations fitted in one set of array operations (fit_stations): at 60 samples each station's
candidate arrays take ~150 KB, a batch's ~2.4 MB. Measured at 10 clusters x 100 services (653
stations): 8-16 at a time 0.28 s, 32 0.35 s, 64 0.39 s (the arrays outgrow the cache), one by one
0.32 s."""
FIT_THREADS = min(2, os.cpu_count() or 1)
"""Threads fitting batches at once (numpy lets go of the GIL inside its array loops): 653
stations in 0.15 s instead of 0.28 s on 2 cores. More do not pay on the 2 cores measured."""
THREADS_FROM = 128
"""Stations from which the batches are fitted in FIT_THREADS threads. Below it the fit takes
under ~50 ms, and threads cost more than they save where several loops run at once: six threads
each fitting 40-station meshes (the operator's worker threads) took 2.05 s and 166 MB peak RSS
with fit threads, 1.48 s and 105 MB without (one at a time, as before batching: 3.71 s)."""


@dataclass(frozen=True)
class _Prepared:
    """One station's usable samples and the weights of its fit."""

    w: FArray
    q: FArray
    inv_r: FArray
    wt: FArray  # relative error weights, mean 1
    qq: float  # weighted sum of squared waits


def fit_stations(samples: Sequence[Samples]) -> list[FittedStation | None]:
    """`fit_station` of each station, in order. Stations with the same number of usable samples
    are fitted together, BATCH at a time, FIT_THREADS batches at once, with the same arithmetic
    per station as one alone: a station gets bit for bit the figures it gets alone
    (tests/learn/test_curves.py), and the 1,550 stations of three captured closed-loop runs got
    those of the one-at-a-time fit before it. At 10 clusters x 100 services an interval fits ~650
    stations; this takes that from 0.32 s to 0.15 s on 2 cores."""
    out: list[FittedStation | None] = [None] * len(samples)
    groups: dict[int, list[tuple[int, _Prepared]]] = {}
    for i, (work, rps, wait_ms, own_ms) in enumerate(samples):
        prep = _prepare(work, rps, wait_ms, own_ms)
        if isinstance(prep, _Prepared):
            groups.setdefault(len(prep.w), []).append((i, prep))
        else:
            out[i] = prep
    chunks = [
        members[lo : lo + BATCH]
        for members in groups.values()
        for lo in range(0, len(members), BATCH)
    ]
    batches = [[p for _i, p in chunk] for chunk in chunks]
    if len(batches) > 1 and FIT_THREADS > 1 and sum(map(len, batches)) >= THREADS_FROM:
        with ThreadPoolExecutor(FIT_THREADS, thread_name_prefix="slate-fit") as pool:
            fitted = list(pool.map(_fit_batch, batches))
    else:
        fitted = [_fit_batch(b) for b in batches]
    for chunk, fits in zip(chunks, fitted, strict=True):
        for (i, _p), fit in zip(chunk, fits, strict=True):
            out[i] = fit
    return out


def _prepare(
    work: FArray, rps: FArray, wait_ms: FArray, own_ms: FArray | None
) -> _Prepared | FittedStation | None:
    """The samples that carry load, and their weights; a station with none is None, one that
    never queued measurably is fitted here (no pole in sight: a guess well past what was seen)."""
    w = np.asarray(work, dtype=float)
    r = np.asarray(rps, dtype=float)
    q = np.asarray(wait_ms, dtype=float)
    own = np.asarray(own_ms, dtype=float) if own_ms is not None else q + w / np.maximum(r, 1e-12)
    ok = np.isfinite(w) & np.isfinite(r) & np.isfinite(q) & np.isfinite(own) & (r > 0) & (w > 0)
    w, r, q, own = w[ok], r[ok], np.maximum(q[ok], 0.0), np.maximum(own[ok], 1e-6)
    if len(w) == 0:
        return None
    if float(q.max()) <= 1e-9:
        w_max = float(w.max())
        return FittedStation(w_max * UNTRUSTED_CAPACITY_FACTOR, UNIT_SCALE, 1, 0.0, w_max, len(w))
    wt = r / own**2  # relative error; a busier sample's mean is less noisy
    wt = wt / wt.mean()
    return _Prepared(w, q, 1.0 / r, wt, float((wt * q * q).sum()))


def _fit_batch(stations: Sequence[_Prepared]) -> list[FittedStation]:
    """Stations with the same number of samples n: every (station, queue shape c, capacity)
    candidate at once. Axes: b the stations, s the shapes, c the capacities, n the samples. The
    rho^3 term is the same for every shape: its sums are taken once per capacity."""
    w = np.stack([p.w for p in stations])  # (B, n)
    q = np.stack([p.q for p in stations])
    inv_r = np.stack([p.inv_r for p in stations])
    wt = np.stack([p.wt for p in stations])
    qq = np.array([p.qq for p in stations])  # (B,)
    n = w.shape[1]
    w_max = w.max(axis=1)  # (B,)
    caps = w_max[:, None] * CAPACITY_FACTORS  # (B, C)
    rho = np.minimum(w[:, None, :] / caps[:, :, None], RHO_SATURATED)  # (B, C, n)
    saturated = w_max[:, None] / caps >= RHO_SATURATED  # (B, C)
    g1 = _queue_shapes_interpolated(rho) * inv_r[None, :, None, :]  # (S, B, C, n)
    g2 = rho**3 * inv_r[:, None, :]  # (B, C, n)
    wg1 = g1 * wt[None, :, None, :]
    s11 = (wg1 * g1).sum(axis=3)  # (S, B, C)
    s12 = (wg1 * g2).sum(axis=3)
    t1 = (wg1 @ q[:, :, None])[..., 0]
    s22 = ((g2 * g2) @ wt[:, :, None])[..., 0]  # (B, C)
    t2 = (g2 @ (wt * q)[:, :, None])[..., 0]
    det = s11 * s22 - s12 * s12
    good = det > 1e-12 * s11 * s22
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = np.where(good, (t1 * s22 - t2 * s12) / det, -1.0)
        b2 = np.where(good, (t2 * s11 - t1 * s12) / det, -1.0)
        a1 = np.maximum(t1 / s11, 0.0)
    both = (a2 >= 0) & (b2 >= 0)
    a_all = np.where(both, a2, a1)
    b_all = np.where(both, b2, 0.0)
    sse_all = (
        qq[:, None]
        - 2 * (a_all * t1 + b_all * t2)
        + a_all * a_all * s11
        + b_all * b_all * s22
        + 2 * a_all * b_all * s12
    )
    sse_all = np.maximum(sse_all, 0.0)
    with np.errstate(divide="ignore"):
        prior = np.log(np.maximum(a_all, 1e-9) / UNIT_SCALE) ** 2
    # Shapes the data cannot tell apart: the scale nearest to M/M/c's, then the larger capacity
    # (the trust region bounds how far past the data that optimism is used); past saturation the
    # data only says "very slow", and ties go to the smaller capacity (a station seen overloaded
    # is not trusted with more than it choked on).
    tie = np.where(saturated, caps / w_max[:, None], w_max[:, None] / caps)  # (B, C)
    score = sse_all + (qq / n)[:, None] * (PRIOR_WEIGHT * prior + TIE_WEIGHT * tie)
    # Per shape its best capacity (a NaN anywhere in a shape's row rules the shape out); the
    # first shape wins ties.
    j = np.argmin(score, axis=2)  # (S, B)
    best_val = np.take_along_axis(score, j[:, :, None], axis=2)[..., 0]
    best_val = np.where(np.isfinite(best_val), best_val, np.inf)
    i = np.argmin(best_val, axis=0)  # (B,)
    fits = []
    for b, p in enumerate(stations):
        ib, jb = int(i[b]), int(j[i[b], b])
        assert math.isfinite(best_val[ib, b])
        cap, a, bb = float(caps[b, jb]), float(a_all[ib, b, jb]), float(b_all[ib, b, jb])
        sse = float(sse_all[ib, b, jb])
        rmse = math.sqrt(sse / float(p.wt.sum()))
        q_mean = float((p.wt * p.q).sum() / p.wt.sum())
        sst = float((p.wt * (p.q - q_mean) ** 2).sum())
        r2 = 1.0 - sse / sst if sst > 1e-12 * max(p.qq, 1e-300) else math.nan
        w_top = float(w_max[b])
        fits.append(
            FittedStation(cap, a, SERVERS[ib], bb, min(w_top, RHO_SATURATED * cap), n, rmse, r2)
        )
    return fits


def fit_service_times(
    rps: FArray, own_latency_ms: FArray, endpoint_names: Sequence[str], low_quantile: float = 0.3
) -> dict[str, float]:
    """Per endpoint class, the base service time (ms): the non-negative least-squares intercept of
    own latency on the endpoint mix over the lightest `low_quantile` of the samples (rows stacked
    over the service's clusters). Endpoints whose share never varies apart get the same time."""
    from scipy.optimize import nnls

    x = np.asarray(rps, dtype=float)
    lat = np.asarray(own_latency_ms, dtype=float)
    tot = x.sum(axis=1)
    ok = np.isfinite(lat) & (tot > 0) & np.all(np.isfinite(x), axis=1)
    x, lat, tot = x[ok], lat[ok], tot[ok]
    if len(lat) == 0:
        return {}
    cut = float(np.quantile(tot, low_quantile)) if len(tot) > 3 else float(tot.max())
    low = tot <= cut
    frac = x[low] / tot[low, None]
    seen = frac.sum(axis=0) > 0
    names = [n for n, s in zip(endpoint_names, seen, strict=True) if s]
    frac = frac[:, seen]
    if frac.shape[1] == 0:
        return {}
    from slate.learn.callgraph import _groups

    groups = _groups(frac)
    fg = np.column_stack([frac[:, g].sum(axis=1) for g in groups])
    coef, _ = nnls(fg, lat[low])
    fallback = float(np.median(lat[low]))
    out: dict[str, float] = {}
    for gi, g in enumerate(groups):
        val = float(coef[gi])
        for j in g:
            out[names[j]] = val if val > 0 else fallback
    return out


def fit_class_service_times(
    rps: FArray,
    own_ms: FArray,
    endpoint_names: Sequence[str],
    low_quantile: float = 0.3,
    row_groups: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Per endpoint class, the base service time (ms) from its *own* latency series (one column
    per class, nan where unknown; rows stacked over time and over the service's clusters, with
    `row_groups` naming each row's cluster). Unlike `fit_service_times` this separates classes
    whose rates move together: each class's duration is measured on its own.

    The model is own[r, j] = s_j + W_r: in one sample (a row: one cluster at one time) every
    class of a first-come-first-served station waits the same W_r, so the differences between
    classes *within* a row are differences of service times, free of queueing. The relative times
    are the weighted least squares of that model with each row's W_r eliminated in closed form
    (rows weighted by each class's rate: a mean over more requests is less noisy). Pooling rows
    instead (the lightest rows' mean per class) read the queueing of a busy cluster as the cost
    of the classes it happened to serve most: a station seen saturated got get 1.13 / list 0.14 ms
    where the truth was 0.26 / 0.92 (docs/control.md, "What is learned, and how").

    The level of a set of classes measured together is their rows' mean of own - relative time
    over each cluster's lightest `low_quantile` of its rows (by its total rate: one cluster's
    replicas are fixed, so its rate orders its utilisation), taken from the cluster where that is
    least: the sample nearest to no queueing. Classes never measured in a row with another get
    that level alone."""
    x = np.asarray(rps, dtype=float)
    own = np.asarray(own_ms, dtype=float)
    groups = (
        np.zeros(len(x), dtype=np.int64)
        if row_groups is None
        else np.unique(np.asarray(row_groups), return_inverse=True)[1].reshape(-1)
    )
    tot = np.nansum(x, axis=1)
    keep = tot > 0
    x, own, tot, groups = x[keep], own[keep], tot[keep], groups[keep]
    if len(tot) == 0:
        return {}
    valid = np.isfinite(x) & np.isfinite(own) & (x > 0)
    w = np.where(valid, x, 0.0)
    y = np.where(valid, own, 0.0)
    enough = valid.sum(axis=0) >= 2
    w[:, ~enough] = 0.0
    row_w = w.sum(axis=1)
    used = row_w > 0
    w, y, tot, groups, row_w = w[used], y[used], tot[used], groups[used], row_w[used]
    if len(row_w) == 0:
        return {}
    relative = _relative_class_times(w, y, row_w)
    out: dict[str, float] = {}
    for comp in _co_measured(w > 0):
        level = _lightest_level(w[:, comp], y[:, comp] - relative[comp], tot, groups, low_quantile)
        if level is None:
            continue
        for j in comp:
            val = float(relative[j] + level)
            if val > 0 and math.isfinite(val):
                out[endpoint_names[j]] = val
    return out


def _relative_class_times(w: FArray, y: FArray, row_w: FArray) -> FArray:
    """argmin over s of min over W of sum w[r, j] * (y[r, j] - s[j] - W[r])^2, up to a constant
    per set of co-measured classes (the minimum-norm solution: each set's times sum to zero).
    With W[r] eliminated the normal equations are L s = b, L a weighted graph Laplacian of the
    classes (singular along the constants)."""
    share = w / row_w[:, None]
    lap = np.diag(w.sum(axis=0)) - share.T @ w
    rhs = (w * y).sum(axis=0) - share.T @ (w * y).sum(axis=1)
    sol, *_ = np.linalg.lstsq(lap, rhs, rcond=None)
    return np.asarray(sol, dtype=float)


def _co_measured(seen: npt.NDArray[np.bool_]) -> list[list[int]]:
    """The classes (columns) measured at all, grouped by whether a chain of shared rows links
    them (connected components of the co-measurement graph, scipy's), in the order of each
    group's first column."""
    from scipy.sparse.csgraph import connected_components

    linked = (seen.T.astype(float) @ seen.astype(float)) > 0
    _n, labels = connected_components(linked, directed=False)
    comps: dict[int, list[int]] = {}
    for j, label in enumerate(labels.tolist()):
        if linked[j, j]:
            comps.setdefault(label, []).append(j)
    return list(comps.values())


def _lightest_level(
    w: FArray, resid: FArray, tot: FArray, groups: npt.NDArray[np.int64], low_quantile: float
) -> float | None:
    """The least, over clusters, of the weighted mean of `resid` (own - relative time) over the
    cluster's lightest `low_quantile` of rows (by total rate). None when no cluster has two
    light rows measured."""
    best: float | None = None
    measured = w.sum(axis=1) > 0
    for g in np.unique(groups):
        rows = np.flatnonzero((groups == g) & measured)
        if len(rows) < 2:
            continue
        t = tot[rows]
        cut = _quantile(t, low_quantile) if len(rows) > 3 else float(t.max())
        light = rows[t <= cut]
        wl = w[light]
        if wl.sum() <= 0 or np.count_nonzero(wl.sum(axis=1)) < 2:
            continue
        val = float((wl * resid[light]).sum() / wl.sum())
        if math.isfinite(val) and (best is None or val < best):
            best = val
    return best


def _quantile(values: FArray, q: float) -> float:
    """`np.quantile(values, q)` (its default, linear interpolation, and its arithmetic) for the
    short 1-d arrays of one cluster's samples, without numpy's per-call overhead (~20 us, a
    quarter of the service-time fit at 10 clusters x 100 services)."""
    v = np.sort(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    frac = pos - lo
    a, b = float(v[lo]), float(v[hi])
    return b - (b - a) * (1.0 - frac) if frac >= 0.5 else a + (b - a) * frac
