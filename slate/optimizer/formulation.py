"""The routing LP over the endpoint-level call graph.

Variables (all >= 0):
  y[k, d]  calls per second on route key k = (source service, source cluster c_k, destination
           endpoint) that go to destination cluster d (one column per cluster hosting the endpoint);
  L[e, c]  requests per second reaching endpoint e in cluster c (one column per pair some key can
           send to);
  z[s, j]  the work of station s = (service, cluster), ms of service per second, that falls in
           piece j of the station's cost curve (below).

Constraints (equalities; everything else is a bound on a variable, except the caller's rows),
each family built by its own define_* function (build() calls them in this order):
  flow      (define_flow_rows)
            sum_d y[k, d] = rps of k                                       (ingress keys)
            sum_d y[k, d] = sum_e per_request(e -> to_k) * L[e, c_k]       (service keys)
  load      (define_load_rows)
            L[e, c] = sum of y[k, c] over keys k into endpoint e;
  work      (define_work_rows)
            w[s] = sum_j z[s, j] = sum_e service_ms_e * L[e, cluster of s];
  capacity  (define_stations)
            w[s] <= u_s * capacity_s   (u_s = max_utilization, or the least reachable utilization
            of a service that cannot fit; see capacity.py): the pieces end there;
  work bounds (define_stations; the caller's, e.g. a fitted curve's trusted range)
            lo_s <= w[s] <= hi_s: hi_s shortens the pieces; lo_s is a lower bound on the first
            pieces (those below lo_s must be full), which is w[s] >= lo_s since a minimum fills
            the pieces in order;
  caller's rows (define_bound_rows; inequalities, bounds.py)
            route-weight bounds lo * sum_d' y[k, d'] <= y[k, d] <= hi * sum_d' y[k, d'], and any
            sum coef * y <= upper;
  pieces    (define_station_pieces: the first tangents; Formulation.program: the columns z).

Station cost: w[s] + q_s(w[s]) request-ms per second, where q_s, the queueing cost from the latency
model, is convex. The LP uses the upper envelope of the tangents of q_s at points w_j (and of 0):
an outer approximation, so the LP's optimum is a lower bound on every routing's objective. The
envelope is convex and piecewise linear on [0, u_s * capacity_s]; its pieces are the columns
z[s, j], bounded by the piece's length and costing 1 + the piece's slope per unit. Slopes increase
from piece to piece, so a minimum fills them in order and pays exactly the envelope: this is the
epigraph `t[s] >= every tangent` without a row per tangent, which keeps the LP small (one row per
key, per loaded endpoint and per station, however many tangents) and lets solve() start with many.

Objective (scenario-format.md: mean latency ms + cost_weight * egress USD/hour):
  (sum_s (w[s] + q_s(w[s]))  +  sum y[k, d] * rtt(c_k, d)) / total ingress rate
  + cost_weight * egress USD/hour of y[k, d] (request bytes priced c_k -> d, response d -> c_k).
The egress term is a total, not a mean: it is not divided by the ingress rate.

A key that aggregates calls from several endpoints of its source service prices bytes at the mean
request/response size of those calls, weighted by their rates; `solve()` re-estimates those means
from each round's loads. This is the only approximation beside the tangents.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from slate.model.keys import INGRESS, RouteKey, route_keys
from slate.model.latency import LatencyModel, StationModel
from slate.model.scenario import Scenario
from slate.optimizer.bounds import Constraint, RateRow, WeightBound
from slate.optimizer.capacity import endpoint_totals
from slate.optimizer.errors import InfeasibleError, SolveError

GB_PER_KB = 1e-6
SECONDS_PER_HOUR = 3600.0
INITIAL_TANGENTS = 40
"""Tangents per station to start with. Pieces cost columns, not rows, so many are cheap; with 40
the first LP usually underestimates the stations by less than solve()'s 1e-4 tolerance, and one
round is enough when byte sizes need no re-pricing (measured on bench/solve_scale.py's apps)."""
FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]


@dataclass
class StationSpec:
    service: str
    cluster: str
    model: StationModel
    max_work: float  # capacity bound on w (and the caller's upper work bound)
    priced: bool  # False for stations that saturate under any routing (their cost is infinite)
    min_work: float = 0.0  # the caller's lower work bound
    tangents: list[float] = field(default_factory=list)  # work points already in the LP, sorted
    lines: list[tuple[float, float]] = field(default_factory=list)
    """(slope, intercept) of the tangent at each point of `tangents`, in the same order."""
    _pieces: tuple[list[float], list[float], float] | None = field(default=None, repr=False)

    def add_tangent(self, work: float) -> bool:
        """Add the tangent of the queueing cost at `work`; False if it is not usable or too close
        to one already there."""
        if not self.priced or work < 0 or work >= self.model.capacity:
            return False
        i = bisect.bisect_left(self.tangents, work)
        near = 1e-9 * max(1.0, self.max_work)
        if (i > 0 and work - self.tangents[i - 1] <= near) or (
            i < len(self.tangents) and self.tangents[i] - work <= near
        ):
            return False
        return self._insert(work, self.model.queue_cost(work), self.model.queue_slope(work))

    def add_tangents(self, works: list[float]) -> None:
        """add_tangent at every point of `works`, the curve evaluated at all of them at once
        when the model can (an optional `costs_and_slopes(works)` method: the first 40 tangents
        of ~700 fitted stations cost the control loop ~0.5 s point by point)."""
        batch = getattr(self.model, "costs_and_slopes", None)
        if batch is None or not self.priced:
            for w in works:
                self.add_tangent(w)
            return
        points = [w for w in works if 0 <= w < self.model.capacity]
        costs, slopes = batch(points)
        for w, q, g in zip(points, costs, slopes, strict=True):
            self._insert(w, q, g)

    def _insert(self, work: float, q: float, g: float) -> bool:
        i = bisect.bisect_left(self.tangents, work)
        near = 1e-9 * max(1.0, self.max_work)
        if (i > 0 and work - self.tangents[i - 1] <= near) or (
            i < len(self.tangents) and self.tangents[i] - work <= near
        ):
            return False
        if not (math.isfinite(q) and math.isfinite(g)):
            return False
        self.tangents.insert(i, work)
        self.lines.insert(i, (g, q - g * work))
        self._pieces = None
        return True

    def refresh(self) -> None:
        """Rebuild the pieces after a change of `max_work`."""
        self._pieces = None

    def copy_tangents(self, other: StationSpec) -> None:
        """Start from the tangents (and pieces) of a station with the same model and cap."""
        self.tangents = list(other.tangents)
        self.lines = list(other.lines)
        self._pieces = other._pieces

    def pieces(self) -> tuple[list[float], list[float], float]:
        """The LP's cost curve: (lengths, slopes) of the pieces of the envelope of the tangents
        (and of 0) over [0, max_work], and the envelope's value at 0."""
        if self._pieces is None:
            self._pieces = _envelope(self.lines, self.max_work, self.priced)
        return self._pieces


def _envelope(
    lines: list[tuple[float, float]], top: float, priced: bool
) -> tuple[list[float], list[float], float]:
    if top <= 0:
        return [], [], 0.0
    if not priced:
        return [top], [0.0], 0.0
    hull: list[tuple[float, float]] = []  # envelope lines, slopes increasing
    starts: list[float] = []  # where each envelope line starts to be the highest
    for a, b in sorted({(0.0, 0.0), *lines}):
        if hull and hull[-1][0] == a:  # same slope, and this intercept is at least as high
            hull.pop()
            starts.pop()
        start = -math.inf
        while hull:
            a0, b0 = hull[-1]
            start = (b0 - b) / (a - a0)  # where this line overtakes the last one
            if start > starts[-1]:
                break
            hull.pop()
            starts.pop()
            start = -math.inf
        hull.append((a, b))
        starts.append(start)
    lengths: list[float] = []
    slopes: list[float] = []
    for i, (a, _b) in enumerate(hull):
        lo = max(starts[i], 0.0)
        hi = min(starts[i + 1] if i + 1 < len(hull) else math.inf, top)
        if hi > lo:
            lengths.append(hi - lo)
            slopes.append(a)
    return lengths, slopes, max(b for _a, b in hull)


@dataclass(frozen=True)
class Matrix:
    """A sparse matrix as (row, column, value) triplets; entries at the same place add up.

    numpy only: scipy.sparse would cost `slate solve` ~0.1 s of imports (bench/startup.py), and
    HiGHS takes the compressed columns of `csc()` directly."""

    rows: IArray
    cols: IArray
    vals: FArray
    shape: tuple[int, int]

    def scaled(self, row: FArray | None, col: FArray) -> Matrix:
        """diag(row) @ self @ diag(col) (row None: no row scaling)."""
        vals = self.vals * col[self.cols]
        if row is not None:
            vals = vals * row[self.rows]
        return Matrix(self.rows, self.cols, vals, self.shape)

    def stacked(self, below: Matrix) -> Matrix:
        """This matrix with `below`'s rows under its own (same number of columns)."""
        return Matrix(
            np.concatenate([self.rows, below.rows + self.shape[0]]),
            np.concatenate([self.cols, below.cols]),
            np.concatenate([self.vals, below.vals]),
            (self.shape[0] + below.shape[0], self.shape[1]),
        )

    def csc(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FArray]:
        """Compressed columns (start, row index, value), rows sorted in each column, entries at
        the same place summed."""
        order = np.lexsort((self.rows, self.cols))
        rows, cols, vals = self.rows[order], self.cols[order], self.vals[order]
        if len(rows):
            first = np.ones(len(rows), dtype=bool)
            first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
            at = np.flatnonzero(first)
            rows, cols, vals = rows[at], cols[at], np.add.reduceat(vals, at)
        start = np.zeros(self.shape[1] + 1, dtype=np.int32)
        np.cumsum(np.bincount(cols, minlength=self.shape[1]), out=start[1:])
        return start, rows.astype(np.int32), vals.astype(float)

    def dense(self) -> FArray:
        """For tests and debugging."""
        out = np.zeros(self.shape)
        np.add.at(out, (self.rows, self.cols), self.vals)
        return out


@dataclass(frozen=True)
class Program:
    """One round's LP, for HiGHS (highs.py): minimise c x + offset subject to
    a_eq x = b_eq, a_ub x <= b_ub (the caller's rows; None when there are none) and bounds."""

    c: FArray
    a_eq: Matrix
    b_eq: FArray
    a_ub: Matrix | None
    b_ub: FArray | None
    bounds: FArray  # shape (n, 2)
    offset: float
    piece_station: IArray  # station of each piece column
    piece_slope: FArray  # slope of the queueing cost on each piece
    station_offset: FArray  # per station: the envelope's value at zero work
    n_rate_columns: int  # y and L columns come first, then the pieces
    n_rate_rows: int  # flow and load rows come first, then the work rows
    rate_unit: float  # calls per second the solver sees as 1
    work_unit: float  # ms of work per second the solver sees as 1
    total_rps: float

    @property
    def n_vars(self) -> int:
        return len(self.c)

    @property
    def n_rows(self) -> int:
        return len(self.b_eq) + (0 if self.b_ub is None else len(self.b_ub))

    def for_solver(self) -> SolverForm:
        """The LP in units where its numbers are near 1 whatever the scenario's scale.

        HiGHS's tolerances are absolute (1e-7 on feasibility and reduced costs): a scenario at
        1e-8 rps, or one whose costs are all 1e-6, sits below them and comes back 30% off. So the
        call-rate columns are counted in `rate_unit` (the mean ingress rate of a key), the piece
        columns in `work_unit` (the mean work of a station), each row divided by the unit of its
        columns, and the costs by the cost of one work unit's service time (so a piece costs
        1 + its slope, as it would in request-ms per second). A change of the scenario's units
        (rates x s, times / s) then gives the solver the same numbers.
        """
        n = self.n_vars
        col = np.full(n, self.work_unit)
        col[: self.n_rate_columns] = self.rate_unit
        row = np.full(len(self.b_eq), 1.0 / self.work_unit)
        row[: self.n_rate_rows] = 1.0 / self.rate_unit
        c = self.c * col
        cost_unit = self.work_unit / self.total_rps  # a piece costs 1 + its slope
        a_eq = self.a_eq.scaled(row, col)
        a_ub = b_ub = None
        if self.a_ub is not None and self.b_ub is not None:  # rows over rate columns only
            a_ub = self.a_ub.scaled(None, col / self.rate_unit)
            b_ub = self.b_ub / self.rate_unit
        return SolverForm(
            c=c / cost_unit,
            a_eq=a_eq,
            b_eq=self.b_eq * row,
            a_ub=a_ub,
            b_ub=b_ub,
            bounds=self.bounds / col[:, None],
            col_scale=col,
            cost_unit=cost_unit,
        )


@dataclass(frozen=True)
class SolverForm:
    """Program.for_solver(): x = col_scale * x', objective = cost_unit * c' x' + offset."""

    c: FArray
    a_eq: Matrix
    b_eq: FArray
    a_ub: Matrix | None
    b_ub: FArray | None
    bounds: FArray
    col_scale: FArray
    cost_unit: float


@dataclass
class Formulation:
    """The LP's data, built once per scenario; tangents and byte sizes are refined in place."""

    scenario: Scenario
    keys: list[RouteKey]
    key_dsts: list[list[int]]  # per key: destination cluster indices, in column order
    y_key: IArray  # y column -> key index
    y_dst: IArray  # y column -> destination cluster index
    stations: list[StationSpec]
    load_index: dict[tuple[str, int], int]  # (endpoint, cluster index) -> L column - n_y
    fixed: tuple[IArray, IArray, FArray]  # (rows, cols, values) of every entry but the pieces'
    b_eq: FArray
    rtt_cost: FArray  # per y column, ms per call
    egress_price: tuple[FArray, FArray]  # per y column: USD/GB for request bytes, response bytes
    key_kb: FArray  # per key: (request_kb, response_kb) currently used for pricing; shape (K, 2)
    sources: tuple[IArray, IArray, FArray, FArray, FArray, FArray]
    """Calls of the keys that aggregate several: (key, L column - n_y or -1, per_request,
    request_kb, response_kb, routing-independent rps of the calling endpoint)."""
    total_rps: float
    rate_unit: float  # the mean ingress rate of a key: Program.for_solver()
    work_unit: float  # the mean work of a station (routing-independent)
    ub: tuple[IArray, IArray, FArray, FArray] = field(
        default_factory=lambda: (
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
            np.zeros(0),
        )
    )
    """The caller's inequality rows over y columns: (rows, cols, values, upper bounds)."""

    @property
    def n_y(self) -> int:
        return len(self.y_key)

    @property
    def n_l(self) -> int:
        return len(self.load_index)

    @property
    def n_s(self) -> int:
        return len(self.stations)

    @property
    def n_rows(self) -> int:
        return len(self.keys) + self.n_l + self.n_s

    def add_tangent(self, s: int, work: float) -> bool:
        return self.stations[s].add_tangent(work)

    def egress_cost(self) -> FArray:
        """Per y column: cost_weight * USD/hour of one call per second."""
        cw = self.scenario.objective.cost_weight_ms_per_usd_hour
        req_kb = self.key_kb[self.y_key, 0]
        resp_kb = self.key_kb[self.y_key, 1]
        usd_h = (req_kb * self.egress_price[0] + resp_kb * self.egress_price[1]) * (
            GB_PER_KB * SECONDS_PER_HOUR
        )
        out: FArray = cw * usd_h
        return out

    def program(self) -> Program:
        """The LP with the current tangents and byte sizes."""
        n_y, n_l, n_s = self.n_y, self.n_l, self.n_s
        first_station_row = len(self.keys) + n_l
        lengths: list[float] = []
        lower: list[float] = []
        slopes: list[float] = []
        owner: list[int] = []
        station_offset = np.zeros(n_s)
        for s, spec in enumerate(self.stations):
            ls, gs, at_zero = spec.pieces()
            lengths += ls
            slopes += gs
            owner += [s] * len(ls)
            station_offset[s] = at_zero
            start = 0.0
            for length in ls:  # the pieces below the lower work bound are full
                lower.append(min(max(spec.min_work - start, 0.0), length))
                start += length
        n_p = len(lengths)
        piece_station = np.array(owner, dtype=np.int64)
        piece_slope = np.array(slopes, dtype=float)
        rows, cols, vals = self.fixed
        a_eq = Matrix(
            np.concatenate([rows, first_station_row + piece_station]),
            np.concatenate([cols, n_y + n_l + np.arange(n_p)]),
            np.concatenate([vals, np.ones(n_p)]),
            (self.n_rows, n_y + n_l + n_p),
        )
        c = np.concatenate(
            [
                self.rtt_cost / self.total_rps + self.egress_cost(),
                np.zeros(n_l),
                (1.0 + piece_slope) / self.total_rps,
            ]
        )
        bounds = np.zeros((len(c), 2))
        bounds[: n_y + n_l, 1] = np.inf
        bounds[n_y + n_l :, 0] = lower
        bounds[n_y + n_l :, 1] = lengths
        ub_rows, ub_cols, ub_vals, b_ub = self.ub
        a_ub = None
        if len(b_ub):
            a_ub = Matrix(ub_rows, ub_cols, ub_vals, (len(b_ub), n_y + n_l + n_p))
        return Program(
            c=c,
            a_eq=a_eq,
            b_eq=self.b_eq,
            a_ub=a_ub,
            b_ub=b_ub if len(b_ub) else None,
            bounds=bounds,
            offset=float(station_offset.sum()) / self.total_rps,
            piece_station=piece_station,
            piece_slope=piece_slope,
            station_offset=station_offset,
            n_rate_columns=n_y + n_l,
            n_rate_rows=len(self.keys) + n_l,
            rate_unit=self.rate_unit,
            work_unit=self.work_unit,
            total_rps=self.total_rps,
        )

    def station_work(self, lp: Program, x: FArray) -> tuple[FArray, FArray]:
        """Per station at solution x: the work w and the LP's queueing cost (the envelope)."""
        z = x[self.n_y + self.n_l :]
        w = np.bincount(lp.piece_station, weights=z, minlength=self.n_s)
        q = np.bincount(lp.piece_station, weights=z * lp.piece_slope, minlength=self.n_s)
        return w.astype(float), lp.station_offset + q

    def loads(self, x: FArray) -> FArray:
        """Requests per second per (endpoint, cluster), indexed like `load_index`."""
        out: FArray = x[self.n_y : self.n_y + self.n_l]
        return out

    def bound_certified(self) -> bool:
        """Whether the LP's optimum is a lower bound on every routing's objective: yes unless
        egress is priced and some key aggregates calls of different request/response sizes
        (those are priced at averaged sizes, update_byte_sizes)."""
        if self.scenario.objective.cost_weight_ms_per_usd_hour == 0:
            return True
        key, _lcol, _mult, req, resp, _total = self.sources
        if len(key) == 0:
            return True
        differ = np.zeros(len(self.keys), dtype=bool)
        for kb in (req, resp):
            lo = np.full(len(self.keys), np.inf)
            hi = np.full(len(self.keys), -np.inf)
            np.minimum.at(lo, key, kb)
            np.maximum.at(hi, key, kb)
            differ |= hi > lo
        return not bool(differ.any())

    def update_byte_sizes(self, loads: FArray | None) -> None:
        """Price each aggregated key at its calls' rate-weighted mean sizes (from `loads`, or from
        the routing-independent endpoint totals when None)."""
        key, lcol, mult, req, resp, total = self.sources
        if len(key) == 0:
            return
        if loads is None:
            rates = mult * total
        else:
            rates = mult * np.where(lcol >= 0, loads[np.maximum(lcol, 0)], 0.0)
        n_k = len(self.keys)
        by_key = np.bincount(key, weights=rates, minlength=n_k)
        rates = np.where(by_key[key] > 0, rates, mult)  # no traffic yet: weigh by per_request
        by_key = np.bincount(key, weights=rates, minlength=n_k)
        priced = np.unique(key[by_key[key] > 0])
        for col, kb in ((0, req), (1, resp)):
            mean = np.bincount(key, weights=rates * kb, minlength=n_k)
            self.key_kb[priced, col] = mean[priced] / by_key[priced]


Entries = tuple[IArray, IArray, FArray]
"""(rows, cols, values) of a block of constraint-matrix entries."""


def _entries(rows: list[int], cols: list[int], vals: list[float]) -> Entries:
    return (
        np.array(rows, dtype=np.int64),
        np.array(cols, dtype=np.int64),
        np.array(vals, dtype=float),
    )


@dataclass(frozen=True)
class Columns:
    """The LP's route and load columns (the piece columns come per round, in program())."""

    keys: list[RouteKey]
    key_dsts: list[list[int]]  # per key: destination cluster indices, in column order
    y_key: IArray  # y column -> key index
    y_dst: IArray  # y column -> destination cluster index
    y_load: IArray  # y column -> the L column (- n_y) of the (endpoint, cluster) it loads
    load_index: dict[tuple[str, int], int]  # (endpoint, cluster index) -> L column - n_y

    @property
    def n_y(self) -> int:
        return len(self.y_key)

    @property
    def n_l(self) -> int:
        return len(self.load_index)


def build(
    scenario: Scenario,
    latency: LatencyModel,
    utilization_caps: dict[str, float] | None = None,
    unpriced: set[str] | None = None,
    initial_tangents: int = INITIAL_TANGENTS,
    *,
    work_bounds: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    constraints: Iterable[Constraint] = (),
) -> Formulation:
    """Build the LP, block by block (the define_* functions below, one per family of rows).
    `utilization_caps` overrides max_utilization per service (for services that cannot fit);
    `unpriced` services saturate under any routing and get no queueing cost; `work_bounds` and
    `constraints` are the caller's (module docstring). Raises InfeasibleError when one station's
    or one key's bounds cannot hold on their own."""
    topo = scenario.topology
    cidx = {c: i for i, c in enumerate(topo.clusters)}
    columns = define_route_columns(scenario, route_keys(scenario), cidx)
    stations = define_stations(
        scenario, latency, utilization_caps or {}, unpriced or set(), work_bounds or {}
    )
    if work_bounds:
        _check_service_room(scenario, stations)
    n_k = len(columns.keys)
    flow, flow_rhs, key_kb, sources = define_flow_rows(scenario, columns, cidx)
    load = define_load_rows(columns, first_row=n_k)
    work = define_work_rows(scenario, columns, stations, cidx, first_row=n_k + columns.n_l)
    blocks = (flow, load, work)
    b_eq = np.concatenate([flow_rhs, np.zeros(columns.n_l + len(stations))])

    rtt = topo.rtt_matrix()
    price = topo.egress_matrix()
    ysrc = np.array([cidx[k.from_cluster] for k in columns.keys], dtype=np.int64)[columns.y_key]
    y_dst = columns.y_dst
    f = Formulation(
        scenario=scenario,
        keys=columns.keys,
        key_dsts=columns.key_dsts,
        y_key=columns.y_key,
        y_dst=y_dst,
        stations=stations,
        load_index=columns.load_index,
        fixed=(
            np.concatenate([b[0] for b in blocks]),
            np.concatenate([b[1] for b in blocks]),
            np.concatenate([b[2] for b in blocks]),
        ),
        b_eq=b_eq,
        rtt_cost=rtt[ysrc, y_dst],
        egress_price=(
            np.where(ysrc != y_dst, price[ysrc, y_dst], 0.0),
            np.where(ysrc != y_dst, price[y_dst, ysrc], 0.0),
        ),
        key_kb=key_kb,
        sources=sources,
        total_rps=scenario.total_rps,
        rate_unit=_positive(scenario.total_rps / max(int(np.count_nonzero(flow_rhs)), 1)),
        work_unit=_positive(_total_work(scenario) / max(len(stations), 1)),
        ub=define_bound_rows(columns, topo.clusters, constraints),
    )
    f.update_byte_sizes(None)
    define_station_pieces(stations, initial_tangents)
    return f


def _total_work(scenario: Scenario) -> float:
    totals = endpoint_totals(scenario)
    return sum(totals.get(eid, 0.0) * e.service_ms for eid, e in scenario.app.endpoints.items())


def _positive(unit: float) -> float:
    return unit if unit > 0 and math.isfinite(unit) else 1.0


def define_route_columns(scenario: Scenario, keys: list[RouteKey], cidx: dict[str, int]) -> Columns:
    """y columns, key by key (one per cluster hosting the key's destination), and the load
    column L of every (endpoint, cluster) they reach."""
    app = scenario.app
    clusters_of = {s.name: [cidx[c] for c in s.clusters] for s in app.services}
    key_dsts = [clusters_of[app.service_of(k.to).name] for k in keys]
    counts = np.array([len(d) for d in key_dsts], dtype=np.int64)
    y_key = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    y_dst = np.array([d for dsts in key_dsts for d in dsts], dtype=np.int64)
    load_index: dict[tuple[str, int], int] = {}
    y_load = np.empty(len(y_key), dtype=np.int64)
    for col, (i, d) in enumerate(zip(y_key.tolist(), y_dst.tolist(), strict=True)):
        y_load[col] = load_index.setdefault((keys[i].to, d), len(load_index))
    return Columns(keys, key_dsts, y_key, y_dst, y_load, load_index)


def define_stations(
    scenario: Scenario,
    latency: LatencyModel,
    caps: dict[str, float],
    unpriced: set[str],
    work_bounds: Mapping[tuple[str, str], tuple[float, float]],
) -> list[StationSpec]:
    """One station per (service, cluster where it is deployed), its work capped at
    u_s * capacity_s and inside the caller's work bounds."""
    stations: list[StationSpec] = []
    for svc in scenario.app.services:
        for c in svc.clusters:
            model = latency.station(svc.name, c)
            u = caps.get(svc.name, scenario.objective.max_utilization)
            stations.append(
                StationSpec(svc.name, c, model, u * model.capacity, svc.name not in unpriced)
            )
    _apply_work_bounds(stations, work_bounds)
    return stations


def define_flow_rows(
    scenario: Scenario, columns: Columns, cidx: dict[str, int]
) -> tuple[Entries, FArray, FArray, tuple[IArray, IArray, FArray, FArray, FArray, FArray]]:
    """Flow rows, one per key k (row k):
        sum_d y[k, d] = rps of k                                   (ingress keys: the right side)
        sum_d y[k, d] - sum_e per_request(e -> to_k) * L[e, c_k] = 0        (service keys)
    Also the byte sizes each key is priced at (ingress: the demand's rate-weighted means) and,
    for keys aggregating several calls, those calls (Formulation.sources)."""
    app = scenario.app
    keys, n_y = columns.keys, columns.n_y
    ingress_rps: dict[tuple[str, str], float] = defaultdict(float)
    ingress_kb: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for demand in scenario.ingress:
        for cname, rps in demand.rps.items():
            ingress_rps[(cname, demand.endpoint)] += rps
            acc = ingress_kb[(cname, demand.endpoint)]
            acc[0] += rps * demand.request_kb
            acc[1] += rps * demand.response_kb
            acc[2] += rps
    callers: dict[str, dict[str, list[tuple[str, float, float, float]]]] = {}
    for svc in app.services:
        by_dst: dict[str, list[tuple[str, float, float, float]]] = defaultdict(list)
        for e in svc.endpoints:
            for call in e.calls:
                by_dst[call.to].append((e.id, call.per_request, call.request_kb, call.response_kb))
        callers[svc.name] = by_dst
    totals = endpoint_totals(scenario)

    rhs = np.zeros(len(keys))
    key_kb = np.zeros((len(keys), 2))
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    src: tuple[list[int], list[int], list[float], list[float], list[float], list[float]] = (
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for i, k in enumerate(keys):
        if k.from_service == INGRESS:
            rhs[i] = ingress_rps[(k.from_cluster, k.to)]
            acc = ingress_kb[(k.from_cluster, k.to)]
            if acc[2] > 0:
                key_kb[i] = (acc[0] / acc[2], acc[1] / acc[2])
            continue
        src_c = cidx[k.from_cluster]
        calls = callers[k.from_service][k.to]
        per_endpoint: dict[str, float] = defaultdict(float)
        for eid, mult, _rq, _rs in calls:
            per_endpoint[eid] += mult
        for eid, mult in per_endpoint.items():
            lcol = columns.load_index.get((eid, src_c))
            if lcol is not None:
                rows.append(i)
                cols.append(n_y + lcol)
                vals.append(-mult)
        key_kb[i] = calls[0][2:4]
        if len(calls) > 1:
            for eid, mult, rq, rs in calls:
                src[0].append(i)
                src[1].append(columns.load_index.get((eid, src_c), -1))
                src[2].append(mult)
                src[3].append(rq)
                src[4].append(rs)
                src[5].append(totals.get(eid, 0.0))
    y_rows, y_cols, y_vals = columns.y_key, np.arange(n_y, dtype=np.int64), np.ones(n_y)
    l_rows, l_cols, l_vals = _entries(rows, cols, vals)
    entries = (
        np.concatenate([y_rows, l_rows]),
        np.concatenate([y_cols, l_cols]),
        np.concatenate([y_vals, l_vals]),
    )
    sources = (
        np.array(src[0], dtype=np.int64),
        np.array(src[1], dtype=np.int64),
        np.array(src[2], dtype=float),
        np.array(src[3], dtype=float),
        np.array(src[4], dtype=float),
        np.array(src[5], dtype=float),
    )
    return entries, rhs, key_kb, sources


def define_load_rows(columns: Columns, first_row: int) -> Entries:
    """Load rows, one per (endpoint e, cluster c): L[e, c] - sum_k y[k, c] = 0 over the keys k
    into e."""
    n_y, n_l = columns.n_y, columns.n_l
    return (
        np.concatenate([first_row + columns.y_load, first_row + np.arange(n_l, dtype=np.int64)]),
        np.concatenate([np.arange(n_y, dtype=np.int64), n_y + np.arange(n_l, dtype=np.int64)]),
        np.concatenate([-np.ones(n_y), np.ones(n_l)]),
    )


def define_work_rows(
    scenario: Scenario,
    columns: Columns,
    stations: list[StationSpec],
    cidx: dict[str, int],
    first_row: int,
) -> Entries:
    """Work rows, one per station s: sum_j z[s, j] - sum_e service_ms_e * L[e, cluster of s] = 0.
    Only the L entries are fixed; the piece columns z come per round (Formulation.program)."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for s, spec in enumerate(stations):
        st_c = cidx[spec.cluster]
        for e in scenario.app.service(spec.service).endpoints:
            lcol = columns.load_index.get((e.id, st_c))
            if lcol is not None:
                rows.append(first_row + s)
                cols.append(columns.n_y + lcol)
                vals.append(-e.service_ms)
    return _entries(rows, cols, vals)


def define_station_pieces(stations: list[StationSpec], initial_tangents: int) -> None:
    """The first tangents of each station's queueing cost (initial_tangent_points); stations of
    one model and cap share them (and so their pieces)."""
    first: dict[tuple[StationModel, float, bool], StationSpec] = {}
    for spec in stations:
        seen = first.get((spec.model, spec.max_work, spec.priced))
        if seen is None:
            points = initial_tangent_points(
                spec.max_work / spec.model.capacity, spec.model.capacity, initial_tangents
            )
            spec.add_tangents(points)
            spec.pieces()
            first[(spec.model, spec.max_work, spec.priced)] = spec
        else:
            spec.copy_tangents(seen)


SERVICE_ROOM_SLACK = 1e-6
"""_check_service_room calls bounds infeasible only when they miss by more than this (relative):
closer calls are left to the LP and its tolerances."""


def _check_service_room(scenario: Scenario, stations: list[StationSpec]) -> None:
    """Raise InfeasibleError when some service's stations cannot take its work under their
    caps and the caller's work bounds, without solving the LP: a service's work summed over its
    clusters does not depend on the routing (every endpoint's total rate is fixed by the demand
    and the call graph, capacity.endpoint_totals), so work bounds summing to less admit no
    routing. The control loop's trust region does this when a service's demand has outgrown the
    loads it was measured at; an interior point method takes as long to say so as to solve."""
    totals = endpoint_totals(scenario)
    need: dict[str, float] = defaultdict(float)
    for eid, e in scenario.app.endpoints.items():
        need[e.service] += totals.get(eid, 0.0) * e.service_ms
    room: dict[str, float] = defaultdict(float)
    for spec in stations:
        room[spec.service] += max(spec.max_work, 0.0)
    for service in sorted(room):
        if room[service] < need[service] * (1 - SERVICE_ROOM_SLACK):
            raise InfeasibleError(
                f"the work bounds admit no routing: the stations of {service} take at most "
                f"{room[service]:g} ms/s together, below its {need[service]:g} ms/s of work "
                "(the same under every routing)"
            )


def _apply_work_bounds(
    stations: list[StationSpec], work_bounds: Mapping[tuple[str, str], tuple[float, float]]
) -> None:
    by_name = {(spec.service, spec.cluster): spec for spec in stations}
    for (service, cluster), (lo, hi) in work_bounds.items():
        spec = by_name.get((service, cluster))
        where = f"work bounds of {service}@{cluster}"
        if spec is None:
            raise SolveError(f"{where}: no such station (the service is not deployed there)")
        if math.isnan(lo) or math.isnan(hi) or lo > hi or hi < 0:
            raise InfeasibleError(f"{where}: [{lo:g}, {hi:g}] ms/s is empty")
        if lo > spec.max_work * (1 + 1e-12):
            raise InfeasibleError(
                f"{where}: the lower bound {lo:g} ms/s is above the station's cap "
                f"{spec.max_work:g} ms/s (capacity x max_utilization)"
            )
        spec.max_work = min(spec.max_work, hi)
        spec.min_work = max(lo, 0.0)


def define_bound_rows(
    columns: Columns, clusters: tuple[str, ...], constraints: Iterable[Constraint]
) -> tuple[IArray, IArray, FArray, FArray]:
    """The caller's inequality rows over y columns (module docstring), with their upper bounds:
    a weight bound is `(1 - hi) y[k, d] - hi * (the key's other columns) <= 0` and
    `lo * (the key's other columns) - (1 - lo) y[k, d] <= 0`; a RateRow as written."""
    keys, key_dsts = columns.keys, columns.key_dsts
    first_col: dict[RouteKey, int] = {}
    col = 0
    for k, dsts in zip(keys, key_dsts, strict=True):
        first_col[k] = col
        col += len(dsts)
    key_index = {k: i for i, k in enumerate(keys)}
    cidx = {c: i for i, c in enumerate(clusters)}

    def key_columns(key: RouteKey, what: str) -> tuple[int, list[int]]:
        if key not in key_index:
            raise SolveError(
                f"{what}: no route key {key.from_service}@{key.from_cluster} -> {key.to} "
                "in this scenario"
            )
        dsts = key_dsts[key_index[key]]
        return first_col[key], dsts

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    upper: list[float] = []
    lo_sum: dict[RouteKey, float] = defaultdict(float)
    hi_of: dict[RouteKey, dict[int, float]] = defaultdict(dict)
    for con in constraints:
        if isinstance(con, WeightBound):
            what = (
                f"weight bound on {con.key.from_service}@{con.key.from_cluster} -> {con.key.to}"
                f", cluster {con.cluster}"
            )
            start, dsts = key_columns(con.key, what)
            d = cidx.get(con.cluster, -1)
            if con.lo > con.hi:
                raise InfeasibleError(f"{what}: [{con.lo:g}, {con.hi:g}] is empty")
            if d not in dsts:
                if con.lo > 0:
                    raise InfeasibleError(f"{what}: the destination is not deployed there")
                continue
            lo_sum[con.key] += max(con.lo, 0.0)
            hi_of[con.key][d] = min(hi_of[con.key].get(d, 1.0), con.hi)
            own = start + dsts.index(d)
            key_cols = range(start, start + len(dsts))
            for bound, sign in ((con.hi, 1.0), (con.lo, -1.0)):
                if (sign > 0 and bound >= 1.0) or (sign < 0 and bound <= 0.0):
                    continue  # always holds
                row = len(upper)
                for j in key_cols:
                    rows.append(row)
                    cols.append(j)
                    vals.append(sign * ((1.0 if j == own else 0.0) - bound))
                upper.append(0.0)
        elif isinstance(con, RateRow):
            row = len(upper)
            for key, cluster, coef in con.terms:
                start, dsts = key_columns(key, f"rate row {con.name!r}")
                d = cidx.get(cluster, -1)
                if d in dsts:
                    rows.append(row)
                    cols.append(start + dsts.index(d))
                    vals.append(coef)
            upper.append(con.upper)
    for key, total in lo_sum.items():
        if total > 1.0 + 1e-9:
            raise InfeasibleError(
                f"weight bounds on {key.from_service}@{key.from_cluster} -> {key.to}: "
                f"the lower bounds sum to {total:g} > 1"
            )
    for key, his in hi_of.items():
        dsts = key_dsts[key_index[key]]
        room = sum(his.get(d, 1.0) for d in dsts)
        if room < 1.0 - 1e-9:
            raise InfeasibleError(
                f"weight bounds on {key.from_service}@{key.from_cluster} -> {key.to}: "
                f"the upper bounds sum to {room:g} < 1"
            )
    return (
        np.array(rows, dtype=np.int64),
        np.array(cols, dtype=np.int64),
        np.array(vals, dtype=float),
        np.array(upper, dtype=float),
    )


def initial_tangent_points(
    max_rho: float, capacity: float, count: int = INITIAL_TANGENTS
) -> list[float]:
    """Work points from 0 to the cap, spaced evenly in 1 / sqrt(1 - rho): dense near saturation,
    where the queueing cost bends hardest. A cost with a pole at saturation, like M/M/c's
    ~1 / (1 - rho), curves like (1 - rho)^-3, and a tangent envelope misses it by about
    curvature * spacing^2 / 8 between two points: this spacing makes that miss the same all the
    way to the cap (geometric spacing in 1 - rho leaves it growing as 1 / (1 - rho))."""
    top = min(max_rho, 1.0 - 1e-6)
    if top <= 0:
        return [0.0]
    u = np.linspace(1.0, 1.0 / math.sqrt(1.0 - top), count)
    return [float((1.0 - 1.0 / v**2) * capacity) for v in u]
