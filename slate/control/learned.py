"""What the loop learned of the mesh from one Observation, and the Scenario it hands the optimizer.

The Scenario built here holds only what telemetry and the policy say: clusters, RTT (policy or
measured), egress prices and the objective from the policy; ingress demand, the endpoint call graph,
bytes per call, per-endpoint service times and each station's curve learned from the Observation.
Replica counts are unknown to the loop: every deployed station gets `replicas = 1` (it only marks
where a service runs), and the fitted curve's capacity is what counts.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np

from slate.learn.callgraph import CallEstimate, drop_cycles, fit_calls
from slate.learn.curves import (
    FittedStation,
    Samples,
    fit_class_service_times,
    fit_service_times,
    fit_stations,
)
from slate.model.app import App, Call, Endpoint, Service, split_endpoint_id
from slate.model.demand import IngressDemand
from slate.model.policy import TrafficPolicy
from slate.model.scenario import Objective, Scenario
from slate.model.topology import Topology
from slate.telemetry.observation import INGRESS, Observation

DEFAULT_SERVICE_MS = 1.0
"""Service time of an endpoint never seen serving (only its share of work units depends on it)."""
UNMEASURED_RTT_MS = 1000.0
"""RTT the optimizer is given for a pair with no policy value and no measurement: high enough that
no traffic is sent over it on a guess (closed-loop.md)."""
MIN_SAMPLES = 3


@dataclass(frozen=True)
class LearnedModel:
    """A fitted LatencyModel over the loop's stations (slate/model/latency.py)."""

    curves: Mapping[tuple[str, str], FittedStation]

    def station(self, service: str, cluster: str) -> FittedStation:
        return self.curves[(service, cluster)]


@dataclass
class Learned:
    """Everything learned at one interval."""

    scenario: Scenario
    latency: LearnedModel
    calls: list[CallEstimate]
    service_ms: dict[str, float]
    work_now: dict[tuple[str, str], float]  # current work per station (ms/s) in learned units
    measured: set[tuple[str, str]]  # stations whose curve comes from their own samples
    unmeasured_rtt: list[tuple[str, str]] = field(default_factory=list)


def internal(eid: str) -> str:
    """A policy endpoint id as the scenario names it: a bare service (one class) is `service.`."""
    return eid if "." in eid else eid + "."


def external(eid: str) -> str:
    """A scenario endpoint id as the policy, the metrics and the proxies name it."""
    return eid[:-1] if eid.endswith(".") else eid


def _arr(series: Sequence[float]) -> np.ndarray:
    return np.asarray(series, dtype=float)


def learn(
    policy: TrafficPolicy,
    obs: Observation,
    deployment: Mapping[str, Sequence[str]] | None = None,
    previous: Mapping[tuple[str, str], FittedStation] | None = None,
    previous_service_ms: Mapping[str, float] | None = None,
) -> Learned:
    """Learn the mesh from `obs`. `deployment` (service -> clusters running it, e.g. from an
    endpoints file) adds stations telemetry has not seen yet; `previous` fits stand in for
    stations without samples in the lookback."""
    previous = previous or {}
    clusters = [c.name for c in policy.clusters]
    routed = {s.name for s in policy.services}
    endpoint_ids = list(policy.endpoint_ids())
    eps_of: dict[str, list[str]] = defaultdict(list)
    for eid in endpoint_ids:
        eps_of[split_endpoint_id(eid)[0]].append(eid)

    # Where each service runs: seen in telemetry, or declared.
    deployed: dict[str, list[str]] = {s: [] for s in eps_of}
    for svc, c in obs.stations:
        if svc in deployed and c in clusters and c not in deployed[svc]:
            deployed[svc].append(c)
    for svc, cs in (deployment or {}).items():
        if svc in deployed:
            for c in cs:
                if c in clusters and c not in deployed[svc]:
                    deployed[svc].append(c)
    for svc in deployed:
        deployed[svc].sort(key=clusters.index)

    # Call graph, per calling service, rows stacked over its clusters.
    estimates: list[CallEstimate] = []
    for svc, eids in eps_of.items():
        dsts: list[str] = sorted(
            {
                d
                for c in deployed[svc]
                if (svc, c) in obs.stations
                for d in obs.stations[(svc, c)].outbound_series
                if split_endpoint_id(d)[0] in routed
            }
        )
        if not dsts:
            continue
        xs, ys = [], []
        n = len(obs.times)
        for c in deployed[svc]:
            st = obs.stations.get((svc, c))
            if st is None:
                continue
            xs.append(np.column_stack([_arr(st.rps_series.get(e, (0.0,) * n)) for e in eids]))
            ys.append(np.column_stack([_arr(st.outbound_series.get(d, (0.0,) * n)) for d in dsts]))
        x = np.vstack(xs)
        y = np.nan_to_num(np.vstack(ys), nan=0.0)
        x = np.nan_to_num(x, nan=0.0)
        busy = x.sum(axis=1) > 0
        estimates += fit_calls(x[busy], y[busy], eids, dsts)
    calls = drop_cycles(estimates)
    per_request: dict[str, dict[str, float]] = defaultdict(dict)
    pooled: set[str] = set()  # classes whose calls were attributed in proportion to rates
    for est in calls:
        per_request[est.frm][est.to] = est.per_request
        if not est.separable and est.per_request > 0:
            pooled.add(est.frm)

    # Service times per endpoint, pooled over the service's clusters.
    service_ms: dict[str, float] = dict(previous_service_ms or {})
    for svc, eids in eps_of.items():
        got = _service_times(obs, svc, eids, deployed[svc], per_request, pooled)
        service_ms.update({e: v for e, v in got.items() if v > 0 and math.isfinite(v)})
    known = [v for v in service_ms.values() if v > 0]
    fallback_ms = statistics.median(known) if known else DEFAULT_SERVICE_MS
    for eids in eps_of.values():
        mine = [service_ms[e] for e in eids if e in service_ms]
        for e in eids:
            service_ms.setdefault(e, statistics.median(mine) if mine else fallback_ms)

    # Station curves, every station's fit at once (fit_stations).
    curves: dict[tuple[str, str], FittedStation] = {}
    work_now: dict[tuple[str, str], float] = {}
    to_fit: dict[tuple[str, str], Samples] = {}
    n = len(obs.times)
    for svc, eids in eps_of.items():
        data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for c in deployed[svc]:
            st = obs.stations.get((svc, c))
            if st is None:
                continue
            x = np.nan_to_num(
                np.column_stack([_arr(st.rps_series.get(e, (0.0,) * n)) for e in eids]), nan=0.0
            )
            own = _arr(st.own_latency_series)
            good = np.isfinite(own) & (x.sum(axis=1) > 0)
            # The first sample of a series is a rate over a partly filled window: skip it.
            first = np.flatnonzero(good)
            if len(first):
                good[first[0]] = False
            data[c] = (x[good], own[good], np.array([st.rps_by_endpoint.get(e, 0.0) for e in eids]))
        s_vec = np.array([service_ms[e] for e in eids])
        for c, (x, own, _now) in data.items():
            if len(own) >= MIN_SAMPLES:
                rps = x.sum(axis=1)
                work = x @ s_vec
                to_fit[(svc, c)] = (work, rps, own - work / rps, own)
        for c in deployed[svc]:
            work_now[(svc, c)] = float(data[c][2] @ s_vec) if c in data else 0.0
    for key, fit in zip(to_fit, fit_stations(list(to_fit.values())), strict=True):
        if fit is not None:
            curves[key] = fit
    measured = set(curves)
    # Stations without a fit of their own: the previous fit, else the service's typical shape.
    for svc in eps_of:
        fitted = [curves[(svc, c)] for c in deployed[svc] if (svc, c) in curves]
        for c in deployed[svc]:
            if (svc, c) in curves:
                continue
            if (svc, c) in previous:
                curves[(svc, c)] = previous[(svc, c)]
                continue
            if fitted:
                mid = statistics.median(f.capacity for f in fitted)
                proto = min(fitted, key=lambda f: abs(f.capacity - mid))
                curves[(svc, c)] = proto.scaled(1.0)
            else:
                total = sum(work_now.get((svc, cc), 0.0) for cc in deployed[svc])
                curves[(svc, c)] = FittedStation(max(total, 1.0) * 10.0, 1000.0, 1, 0.0, 0.0)

    scenario, unmeasured = _scenario(policy, obs, deployed, eps_of, service_ms, calls)
    return Learned(
        scenario, LearnedModel(curves), calls, service_ms, work_now, measured, unmeasured
    )


def _service_times(
    obs: Observation,
    svc: str,
    eids: Sequence[str],
    clusters: Sequence[str],
    per_request: Mapping[str, Mapping[str, float]],
    pooled: AbstractSet[str],
) -> dict[str, float]:
    """One service's base service time per endpoint class (ms), rows stacked over its clusters.

    From each class's own time where the telemetry has it (Istio's durations carry the class
    label; `_class_own_series`): separates classes whose rates move together, which the station's
    mix cannot, and queueing from service time (`fit_class_service_times`). With exact service
    times the closed loop met every acceptance criterion in 55 of 60 runs against 48 of 60 with
    the mix's intercepts (bench/acceptance.py, docs/control.md). The mix's intercept
    (`fit_service_times`) stays for what the class series cannot give."""
    rows: list[np.ndarray] = []
    lat: list[np.ndarray] = []
    direct: list[np.ndarray | None] = []
    n = len(obs.times)
    for c in clusters:
        st = obs.stations.get((svc, c))
        if st is None:
            continue
        x = np.column_stack([_arr(st.rps_series.get(e, (0.0,) * n)) for e in eids])
        rows.append(np.nan_to_num(x, nan=0.0))
        lat.append(_arr(st.own_latency_series))
        direct.append(_class_own_series(obs, svc, c, eids, per_request, pooled))
    if not rows:
        return {}
    got: dict[str, float] = {}
    measured = [o for o in direct if o is not None]
    if measured and len(measured) == len(rows):
        cluster_of_row = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        got = fit_class_service_times(
            np.vstack(rows), np.vstack(measured), eids, row_groups=cluster_of_row
        )
    if len(got) < len(eids):
        mix = fit_service_times(np.vstack(rows), np.concatenate(lat), eids)
        got = {**mix, **got}
    return got


def _class_own_series(
    obs: Observation,
    svc: str,
    cluster: str,
    eids: Sequence[str],
    per_request: Mapping[str, Mapping[str, float]],
    pooled: AbstractSet[str] = frozenset(),
) -> np.ndarray | None:
    """Own latency per endpoint class of one station over the lookback (n x classes, nan where
    unknown): each class's destination-reported (inclusive) duration less the time of the calls
    one of its requests makes, sum_d per_request(class -> d) * mean time of one call to d
    (source-reported, `outbound_ms_series`). The calls per request are learned (the telemetry does
    not say which class made a call); a class's outbound time is nan where a destination it calls
    has no measured call time. Classes in `pooled` (their calls were attributed in proportion to
    their rates: their rates move together) share one series, their rate-weighted mean, which is
    right in total whatever the true split: the telemetry cannot tell which of them makes the
    calls, so it cannot tell their own times apart either. None when the class durations are not
    in the telemetry, or when the station calls a destination whose time per call is not (older
    telemetry)."""
    st = obs.stations.get((svc, cluster))
    if st is None or not st.latency_series_by_endpoint:
        return None
    n = len(obs.times)
    nan = (math.nan,) * n
    called = [d for d, v in st.outbound_series.items() if np.nansum(_arr(v)) > 0]
    if any(d not in st.outbound_ms_series for d in called):
        return None
    out = np.column_stack([_arr(st.latency_series_by_endpoint.get(e, nan)) for e in eids])
    for j, e in enumerate(eids):
        for d, m in per_request.get(e, {}).items():
            if m > 0 and d in st.outbound_ms_series:
                out[:, j] -= m * _arr(st.outbound_ms_series[d])
    together = [j for j, e in enumerate(eids) if e in pooled]
    if len(together) > 1:
        x = np.column_stack([_arr(st.rps_series.get(eids[j], nan)) for j in together])
        w = np.where(np.isfinite(x) & np.isfinite(out[:, together]) & (x > 0), x, 0.0)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (w * np.nan_to_num(out[:, together])).sum(axis=1) / total
        mean[total <= 0] = np.nan
        for j in together:
            out[:, j] = np.where(np.isfinite(out[:, j]), mean, np.nan)
    return out


def _scenario(
    policy: TrafficPolicy,
    obs: Observation,
    deployed: Mapping[str, list[str]],
    eps_of: Mapping[str, list[str]],
    service_ms: Mapping[str, float],
    calls: Sequence[CallEstimate],
) -> tuple[Scenario, list[tuple[str, str]]]:
    clusters = tuple(c.name for c in policy.clusters)
    n = len(clusters)
    rtt = [[0.0] * n for _ in range(n)]
    unmeasured: list[tuple[str, str]] = []
    given = {k: v for k, v in policy.rtt_ms.items()}
    for i, a in enumerate(clusters):
        for j, b in enumerate(clusters):
            if i >= j:
                continue
            ms = given.get((a, b), given.get((b, a)))
            if ms is None:
                ms = obs.rtt_ms(a, b)
            if ms is None:
                unmeasured.append((a, b))
                ms = UNMEASURED_RTT_MS
            rtt[i][j] = rtt[j][i] = float(ms)
    price = [[0.0] * n for _ in range(n)]
    for i, a in enumerate(clusters):
        for j, b in enumerate(clusters):
            if i != j:
                price[i][j] = float(
                    policy.egress_usd_per_gb.get((a, b), policy.egress_default_usd_per_gb)
                )
    topo = Topology(clusters, tuple(map(tuple, rtt)), tuple(map(tuple, price)))

    by_caller: dict[str, list[CallEstimate]] = defaultdict(list)
    for e in calls:
        by_caller[e.frm].append(e)
    services: list[Service] = []
    for svc, eids in eps_of.items():
        if not deployed[svc]:
            continue
        eps = []
        for eid in eids:
            out = []
            for est in by_caller.get(eid, []):
                if not deployed.get(split_endpoint_id(est.to)[0]):
                    continue
                bpc = obs.bytes_per_call.get((svc, est.to))
                rq, rs = (bpc.request_kb, bpc.response_kb) if bpc is not None else (0.0, 0.0)
                out.append(Call(internal(est.to), est.per_request, _finite(rq), _finite(rs)))
            eps.append(Endpoint(svc, split_endpoint_id(eid)[1], service_ms[eid], tuple(out)))
        services.append(Service(svc, {c: 1 for c in deployed[svc]}, tuple(eps)))
    app = App(tuple(services))

    demand: list[IngressDemand] = []
    by_entry: dict[str, dict[str, float]] = defaultdict(dict)
    for (eid, c), rps in obs.ingress.items():
        if rps > 0 and internal(eid) in app.endpoints and c in clusters:
            by_entry[eid][c] = rps
    for eid, rps_by_c in by_entry.items():
        bpc = obs.bytes_per_call.get((INGRESS, eid))
        rq, rs = (bpc.request_kb, bpc.response_kb) if bpc is not None else (0.0, 0.0)
        demand.append(IngressDemand(internal(eid), rps_by_c, _finite(rq), _finite(rs)))
    objective = Objective(policy.cost_weight_ms_per_usd_hour, policy.max_utilization)
    name = f"{policy.namespace}/{policy.name}"
    return Scenario(name, topo, app, tuple(demand), objective), unmeasured


def _finite(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else 0.0
