"""The routing LP over the endpoint-level call graph.

Variables (all >= 0):
  y[k, d]  calls per second on route key k = (source service, source cluster c_k, destination
           endpoint) that go to destination cluster d (one column per cluster hosting the endpoint);
  w[s]     work of station s = (service, cluster), ms of service per second;
  t[s]     the station's queueing cost, request-ms per second (epigraph variable).

Constraints:
  flow      sum_d y[k, d] = rps of k                                       (ingress keys)
            sum_d y[k, d] = sum_e per_request(e -> to_k) * load(e, c_k)    (service keys)
            where load(e, c) = sum of y[k', c] over keys k' into endpoint e;
  work      w[s] = sum_e service_ms_e * load(e, cluster of s);
  capacity  w[s] <= u_s * capacity_s   (u_s = max_utilization, or the least reachable utilization
            of a service that cannot fit; see capacity.py);
  tangents  t[s] >= q_s(w_j) + q_s'(w_j) (w[s] - w_j) for tangent points w_j of the station's
            convex queueing cost q_s (from the latency model): an outer approximation, so the LP's
            optimum is a lower bound on every routing's objective.

Objective (scenario-format.md: mean latency ms + cost_weight * egress USD/hour):
  (sum_s (w[s] + t[s])  +  sum y[k, d] * rtt(c_k, d)) / total ingress rate
  + cost_weight * egress USD/hour of y[k, d] (request bytes priced c_k -> d, response d -> c_k).
The egress term is a total, not a mean: it is not divided by the ingress rate.

A key that aggregates calls from several endpoints of its source service prices bytes at the mean
request/response size of those calls, weighted by their rates; `solve()` re-estimates those means
from each round's loads. This is the only approximation beside the tangents.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from slate.model.latency import LatencyModel, StationModel
from slate.model.routing import INGRESS
from slate.model.scenario import Scenario
from slate.optimizer.capacity import endpoint_totals
from slate.optimizer.keys import RouteKey, route_keys

GB_PER_KB = 1e-6
SECONDS_PER_HOUR = 3600.0
FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]


@dataclass
class _CallSource:
    endpoint: str
    per_request: float
    request_kb: float
    response_kb: float


@dataclass
class StationSpec:
    service: str
    cluster: str
    model: StationModel
    max_work: float  # capacity bound on w
    priced: bool  # False for stations that saturate under any routing (their cost is infinite)
    tangents: list[float] = field(default_factory=list)  # work points already in the LP


@dataclass
class Formulation:
    """The LP's data, built once per scenario; tangents and byte sizes are refined in place."""

    scenario: Scenario
    keys: list[RouteKey]
    key_dsts: list[list[int]]  # per key: destination cluster indices, in column order
    y_key: IArray  # column -> key index
    y_dst: IArray  # column -> destination cluster index
    stations: list[StationSpec]
    a_eq: sp.csr_matrix
    b_eq: FArray
    rtt_cost: FArray  # per y column, ms per call
    egress_price: tuple[FArray, FArray]  # per y column: USD/GB for request bytes, response bytes
    sources: list[list[_CallSource]]  # per key: the calls it aggregates (empty for ingress keys)
    key_kb: FArray  # per key: (request_kb, response_kb) currently used for pricing; shape (K, 2)
    into: dict[tuple[str, int], list[int]]  # (endpoint, cluster index) -> y columns
    total_rps: float
    tangent_rows: list[tuple[int, float, float]] = field(default_factory=list)
    """(station, slope, intercept): t[s] >= slope * w[s] + intercept."""

    @property
    def n_y(self) -> int:
        return len(self.y_key)

    @property
    def n_s(self) -> int:
        return len(self.stations)

    @property
    def n_vars(self) -> int:
        return self.n_y + 2 * self.n_s

    def add_tangent(self, s: int, work: float) -> bool:
        spec = self.stations[s]
        if not spec.priced or work < 0 or work >= spec.model.capacity:
            return False
        if any(abs(work - p) <= 1e-9 * max(1.0, spec.max_work) for p in spec.tangents):
            return False
        q = spec.model.queue_cost(work)
        g = spec.model.queue_slope(work)
        if not (math.isfinite(q) and math.isfinite(g)):
            return False
        spec.tangents.append(work)
        self.tangent_rows.append((s, g, q - g * work))
        return True

    def objective_vector(self) -> FArray:
        cw = self.scenario.objective.cost_weight_ms_per_usd_hour
        req_kb = self.key_kb[self.y_key, 0]
        resp_kb = self.key_kb[self.y_key, 1]
        usd_h = (req_kb * self.egress_price[0] + resp_kb * self.egress_price[1]) * (
            GB_PER_KB * SECONDS_PER_HOUR
        )
        latency = np.concatenate([self.rtt_cost, np.ones(self.n_s), np.ones(self.n_s)])
        out: FArray = latency / self.total_rps
        out[: self.n_y] += cw * usd_h
        return out

    def inequalities(self) -> tuple[sp.csr_matrix, FArray]:
        """Tangent rows as A_ub x <= b_ub: slope * w[s] - t[s] <= -intercept."""
        m = len(self.tangent_rows)
        rows = np.repeat(np.arange(m), 2)
        cols = np.empty(2 * m, dtype=np.int64)
        vals = np.empty(2 * m)
        b = np.empty(m)
        for i, (s, slope, icpt) in enumerate(self.tangent_rows):
            cols[2 * i], cols[2 * i + 1] = self.n_y + s, self.n_y + self.n_s + s
            vals[2 * i], vals[2 * i + 1] = slope, -1.0
            b[i] = -icpt
        return sp.csr_matrix((vals, (rows, cols)), shape=(m, self.n_vars)), b

    def bounds(self) -> FArray:
        b = np.zeros((self.n_vars, 2))
        b[:, 1] = np.inf
        for s, spec in enumerate(self.stations):
            b[self.n_y + s, 1] = spec.max_work
            if not spec.priced:
                b[self.n_y + self.n_s + s, 1] = 0.0
        return b

    def loads(self, x: FArray) -> dict[tuple[str, int], float]:
        return {k: float(x[cols].sum()) for k, cols in self.into.items()}

    def update_byte_sizes(self, loads: dict[tuple[str, int], float] | None) -> None:
        """Price each aggregated key at its calls' rate-weighted mean sizes."""
        totals = endpoint_totals(self.scenario) if loads is None else None
        for i, srcs in enumerate(self.sources):
            if len(srcs) < 2:
                continue
            c = self.scenario.topology.index(self.keys[i].from_cluster)
            if loads is not None:
                rates = [s.per_request * loads.get((s.endpoint, c), 0.0) for s in srcs]
            else:
                assert totals is not None
                rates = [s.per_request * totals.get(s.endpoint, 0.0) for s in srcs]
            if sum(rates) <= 0:
                rates = [s.per_request for s in srcs]
            tot = sum(rates)
            if tot <= 0:
                continue
            pairs = list(zip(rates, srcs, strict=True))
            self.key_kb[i, 0] = sum(r * s.request_kb for r, s in pairs) / tot
            self.key_kb[i, 1] = sum(r * s.response_kb for r, s in pairs) / tot


def build(
    scenario: Scenario,
    latency: LatencyModel,
    utilization_caps: dict[str, float] | None = None,
    unpriced: set[str] | None = None,
) -> Formulation:
    """Build the LP. `utilization_caps` overrides max_utilization per service (for services that
    cannot fit); `unpriced` services saturate under any routing and get no queueing cost."""
    app, topo = scenario.app, scenario.topology
    caps = utilization_caps or {}
    unpriced = unpriced or set()
    cidx = {c: i for i, c in enumerate(topo.clusters)}
    rtt = topo.rtt_matrix()
    price = topo.egress_matrix()
    keys = route_keys(scenario)

    ingress_rps: dict[tuple[str, str], float] = defaultdict(float)
    ingress_kb: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for demand in scenario.ingress:
        for cname, rps in demand.rps.items():
            ingress_rps[(cname, demand.endpoint)] += rps
            acc = ingress_kb[(cname, demand.endpoint)]
            acc[0] += rps * demand.request_kb
            acc[1] += rps * demand.response_kb
            acc[2] += rps

    key_dsts: list[list[int]] = []
    y_key: list[int] = []
    y_dst: list[int] = []
    into: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        dsts = [cidx[c] for c in app.service_of(k.to).clusters]
        key_dsts.append(dsts)
        for d in dsts:
            into[(k.to, d)].append(len(y_key))
            y_key.append(i)
            y_dst.append(d)
    yk = np.array(y_key, dtype=np.int64)
    yd = np.array(y_dst, dtype=np.int64)
    ysrc = np.array([cidx[keys[i].from_cluster] for i in y_key], dtype=np.int64)
    n_y = len(y_key)

    stations: list[StationSpec] = []
    for svc in app.services:
        for c in svc.clusters:
            model = latency.station(svc.name, c)
            u = caps.get(svc.name, scenario.objective.max_utilization)
            stations.append(
                StationSpec(svc.name, c, model, u * model.capacity, svc.name not in unpriced)
            )
    n_s = len(stations)

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    b_eq = np.zeros(len(keys) + n_s)
    sources: list[list[_CallSource]] = []
    key_kb = np.zeros((len(keys), 2))
    col_start = 0
    for i, k in enumerate(keys):
        n = len(key_dsts[i])
        rows.extend([i] * n)
        cols.extend(range(col_start, col_start + n))
        vals.extend([1.0] * n)
        col_start += n
        srcs: list[_CallSource] = []
        if k.from_service == INGRESS:
            b_eq[i] = ingress_rps[(k.from_cluster, k.to)]
            acc = ingress_kb[(k.from_cluster, k.to)]
            if acc[2] > 0:
                key_kb[i] = (acc[0] / acc[2], acc[1] / acc[2])
        else:
            src_c = cidx[k.from_cluster]
            per_endpoint: dict[str, float] = defaultdict(float)
            for e in app.service(k.from_service).endpoints:
                for call in e.calls:
                    if call.to == k.to:
                        per_endpoint[e.id] += call.per_request
                        srcs.append(
                            _CallSource(e.id, call.per_request, call.request_kb, call.response_kb)
                        )
            for eid, mult in per_endpoint.items():
                for col in into.get((eid, src_c), []):
                    rows.append(i)
                    cols.append(col)
                    vals.append(-mult)
            if srcs:
                key_kb[i] = (srcs[0].request_kb, srcs[0].response_kb)
        sources.append(srcs)
    for s, spec in enumerate(stations):
        row = len(keys) + s
        rows.append(row)
        cols.append(n_y + s)
        vals.append(1.0)
        st_c = cidx[spec.cluster]
        for e in app.service(spec.service).endpoints:
            for col in into.get((e.id, st_c), []):
                rows.append(row)
                cols.append(col)
                vals.append(-e.service_ms)
    a_eq = sp.csr_matrix((vals, (rows, cols)), shape=(len(keys) + n_s, n_y + 2 * n_s))

    f = Formulation(
        scenario=scenario,
        keys=keys,
        key_dsts=key_dsts,
        y_key=yk,
        y_dst=yd,
        stations=stations,
        a_eq=a_eq,
        b_eq=b_eq,
        rtt_cost=rtt[ysrc, yd],
        egress_price=(
            np.where(ysrc != yd, price[ysrc, yd], 0.0),
            np.where(ysrc != yd, price[yd, ysrc], 0.0),
        ),
        sources=sources,
        key_kb=key_kb,
        into=dict(into),
        total_rps=scenario.total_rps,
    )
    f.update_byte_sizes(None)
    for s, spec in enumerate(stations):
        for w in initial_tangent_points(spec.max_work / spec.model.capacity, spec.model.capacity):
            f.add_tangent(s, w)
    return f


def initial_tangent_points(max_rho: float, capacity: float, count: int = 12) -> list[float]:
    """Work points from 0 to the cap, spaced geometrically in (1 - rho): dense near saturation,
    where the queueing cost bends hardest."""
    top = min(max_rho, 1.0 - 1e-6)
    if top <= 0:
        return [0.0]
    gaps = np.geomspace(1.0, 1.0 - top, count)
    return [float((1.0 - g) * capacity) for g in gaps]
