"""Istio-shaped telemetry from a scenario used as hidden truth.

`IstioMetrics(scenario, routing, truth=..., seed=...)` plays a mesh: every `scrape(t)` advances the
counters an Istio sidecar would keep (closed-loop.md's metrics, both reporters) by what the truth
produced since the previous scrape, and returns them; `run(store, start, end, step)` writes a
series of scrapes into a `MemoryBackend`, and `write_openmetrics` turns a store into a file that
`promtool tsdb create-blocks-from openmetrics` backfills.

What the truth does between two scrapes (dt seconds):

- **Demand** per ingress (endpoint, cluster) is the scenario's rps x a factor that drifts: its log
  follows an AR(1) process (`drift` = its per-scrape standard deviation, mean-reverting at 0.9 per
  scrape, so it stays within a few `drift`/0.44 of 1), times `scale_demand` steps.
- **Rates**: each ingress component gets Poisson(rps x dt) requests; the calls they cause follow
  the fluid model (the evaluator's route resolution and propagation, linear in the demand,
  precomputed per routing) on every call edge (source service, source cluster, destination
  endpoint, destination cluster), plus independent jitter of `call_jitter` x sqrt(count)
  (requests in flight at a scrape), split over `pods_per_station` pods per side.
- **Latency**: a station's own time per request is its endpoint's service time plus the truth's
  queueing (`truth_latency_model`: "mmc" = scenario-format.md's M/M/c; "distorted" = service time
  rising with utilisation, 1 + 0.5 rho^2, so the curve is not M/M/c); an endpoint's
  destination-reported duration includes its calls (RTT + callee), sequentially; the
  source-reported duration of a call adds the RTT between the clusters. The duration sum of n
  requests gets relative noise `latency_cv`/sqrt(n); buckets follow an exponential distribution
  with that mean. An overloaded station (rho >= 1) is reported at rho = 0.98 (the truth's judge
  says it is overloaded; the metrics just show it very slow).
- **Bytes**: request/response kB from the scenario, x1000 bytes, with 5%/sqrt(n) noise.

Cheap enough for closed-loop tests: per scrape it is a few sparse mat-vecs, one queueing formula
per station and numpy over the series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from slate.evaluate import RouteResolver
from slate.model.app import split_endpoint_id
from slate.model.demand import IngressDemand
from slate.model.latency import MMcStation
from slate.model.routing import INGRESS, Routing
from slate.model.scenario import Scenario
from slate.telemetry.memory import LabelKey, MemoryBackend

Truth = Literal["mmc", "distorted"]

GATEWAY_SERVICE = "istio-ingressgateway"
"""source_canonical_service of ingress calls (any name the policy does not route would do)."""

DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
"""Istio's default buckets of istio_request_duration_milliseconds."""
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)
"""Istio's default buckets of istio_request_bytes / istio_response_bytes (powers of ten)."""

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"
HISTOGRAMS = (DURATION, REQUEST_BYTES, RESPONSE_BYTES)


# --- The truth's station curves ------------------------------------------------------------------

DISTORTION = 0.5
"""Distorted truth: one request's service time is s * (1 + DISTORTION * rho^2)."""


@dataclass(frozen=True)
class DistortedStation:
    """M/M/c queueing plus service time rising with utilisation: convex, increasing, and not of
    the M/M/c family (so a fit must learn a shape). Same capacity as M/M/c (rho on nominal work)."""

    replicas: int
    distortion: float = DISTORTION

    @property
    def capacity(self) -> float:
        return 1000.0 * self.replicas

    def queue_cost(self, work: float) -> float:
        base = MMcStation(self.replicas).queue_cost(work)
        rho = max(work, 0.0) / self.capacity
        return base + self.distortion * max(work, 0.0) * rho * rho

    def queue_slope(self, work: float) -> float:
        base = MMcStation(self.replicas).queue_slope(work)
        rho = max(work, 0.0) / self.capacity
        return base + 3.0 * self.distortion * rho * rho


@dataclass(frozen=True)
class TruthLatencyModel:
    """The true station curves of a scenario: "mmc" or "distorted" (a LatencyModel)."""

    replicas: Mapping[tuple[str, str], int]
    truth: Truth = "mmc"

    def station(self, service: str, cluster: str) -> MMcStation | DistortedStation:
        c = self.replicas[(service, cluster)]
        return MMcStation(c) if self.truth == "mmc" else DistortedStation(c)


def truth_latency_model(scenario: Scenario, truth: Truth = "mmc") -> TruthLatencyModel:
    """The latency model the simulator's truth uses (pass it to `evaluate` and `solve` to judge)."""
    if truth not in ("mmc", "distorted"):
        raise ValueError(f"truth must be 'mmc' or 'distorted', got {truth!r}")
    reps = {(s.name, c): n for s in scenario.app.services for c, n in s.replicas.items()}
    return TruthLatencyModel(reps, truth)


# --- The generator -------------------------------------------------------------------------------


Edge = tuple[str, str, str, str]
"""(source service or "ingress", source cluster, destination endpoint id, destination cluster)."""


@dataclass(frozen=True)
class _Flows:
    """The fluid model of one routing, linear in the ingress demand vector d (one per component)."""

    edges: tuple[Edge, ...]
    edge_map: sp.csr_matrix  # edges x K: call rps per unit demand
    edge_req_kb: npt.NDArray[np.float64]
    edge_resp_kb: npt.NDArray[np.float64]
    edge_rtt: npt.NDArray[np.float64]
    edge_node: npt.NDArray[np.intp]  # destination node (endpoint, cluster) of each edge
    nodes: tuple[tuple[str, str], ...]
    node_map: sp.csr_matrix  # nodes x K: endpoint rps per unit demand
    node_station: npt.NDArray[np.intp]
    node_service_ms: npt.NDArray[np.float64]
    calls: sp.csr_matrix  # nodes x nodes: per_request * split share of each (caller, callee)
    call_rtt: npt.NDArray[np.float64]  # nodes: sum over calls of per_request * share * rtt
    depth: int


class IstioMetrics:
    """Plays the mesh of `scenario` under `routing` and emits Istio's metrics (module docstring).

    `namespace` is destination_service_namespace; `endpoint_label` carries the endpoint name (the
    policy's telemetry.endpointLabel). `buckets=False` leaves out the `_bucket` series (slate's
    queries never read them; they are 20x the series) — keep them for a real Prometheus."""

    def __init__(
        self,
        scenario: Scenario,
        routing: Routing,
        *,
        truth: Truth = "mmc",
        seed: int = 1,
        namespace: str = "default",
        endpoint_label: str = "slate_endpoint",
        pods_per_station: int = 1,
        buckets: bool = True,
        drift: float = 0.02,
        latency_cv: float = 1.0,
        call_jitter: float = 0.05,
        extra_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.truth: Truth = truth
        self.latency = truth_latency_model(scenario, truth)
        self.rng = np.random.default_rng(seed)
        self.namespace = namespace
        self.endpoint_label = endpoint_label
        self.pods = max(1, int(pods_per_station))
        self.buckets = buckets
        self.drift = drift
        self.latency_cv = latency_cv
        self.call_jitter = call_jitter
        self.extra_labels = dict(extra_labels or {})
        self.components: tuple[IngressDemand, ...] = scenario.ingress
        self._comp: list[tuple[str, str]] = [
            (d.endpoint, c) for d in scenario.ingress for c in d.rps
        ]
        self.nominal = np.array([d.rps[c] for d in scenario.ingress for c in d.rps], dtype=float)
        self._log_factor = np.zeros(len(self._comp))
        self._scale = np.ones(len(self._comp))
        self._stations: list[tuple[str, str]] = [
            (s.name, c) for s in scenario.app.services for c in s.clusters
        ]
        self._station_index = {k: i for i, k in enumerate(self._stations)}
        self._station_models = [self.latency.station(s, c) for s, c in self._stations]
        self._flow_cache: dict[tuple[object, ...], _Flows] = {}
        self.routing = routing
        self._flows = self._build_flows(routing)
        # counters: one slot per (edge, reporter, pod) series, created when an edge first appears
        self._edge_slot: dict[Edge, int] = {}
        self._series_edges: list[Edge] = []
        self._keys: dict[str, list[LabelKey]] = {}
        self._state: dict[str, npt.NDArray[np.float64]] = {}
        self._last_t: float | None = None
        self.scrapes = 0
        self.last_scrape: dict[str, tuple[list[LabelKey], npt.NDArray[np.float64]]] = {}

    # --- truth controls --------------------------------------------------------------------------

    def set_routing(self, routing: Routing) -> None:
        """The weights in force from now on."""
        self.routing = routing
        self._flows = self._build_flows(routing)

    def scale_demand(self, cluster: str, factor: float) -> None:
        """Multiply the demand arriving at `cluster`'s gateway by `factor` (a demand step)."""
        for i, (_, c) in enumerate(self._comp):
            if c == cluster:
                self._scale[i] *= factor

    def nominal_demand(self) -> npt.NDArray[np.float64]:
        """Rps per ingress component with the demand steps applied, without the drift (what the
        truth's optimum is computed for)."""
        return self.nominal * self._scale

    def demand(self) -> npt.NDArray[np.float64]:
        """Current rps per ingress component (drift and steps applied)."""
        return self.nominal * self._scale * np.exp(self._log_factor)

    def demand_scenario(self, *, drifted: bool = False) -> Scenario:
        """The scenario with the current demand (steps applied; drift too when `drifted`): what
        the truth's judge should evaluate and optimise."""
        d = self.demand() if drifted else self.nominal_demand()
        out: list[IngressDemand] = []
        i = 0
        for ing in self.scenario.ingress:
            rps = {}
            for c in ing.rps:
                rps[c] = float(d[i])
                i += 1
            out.append(replace(ing, rps=rps))
        return replace(self.scenario, ingress=tuple(out))

    # --- the fluid model of a routing -------------------------------------------------------------

    def _build_flows(self, routing: Routing) -> _Flows:
        ckey = tuple((r.key, tuple(sorted(r.weights.items()))) for r in routing.routes)
        hit = self._flow_cache.get(ckey)
        if hit is not None:
            return hit
        sc = self.scenario
        app, topo = sc.app, sc.topology
        resolve = RouteResolver(sc, routing).split
        k = len(self._comp)
        nodes: list[tuple[str, str]] = [
            (e.id, c) for s in app.services for e in s.endpoints for c in s.clusters
        ]
        node_ix = {n: i for i, n in enumerate(nodes)}
        load: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        edge_rows: dict[Edge, npt.NDArray[np.float64]] = {}
        edge_kb: dict[Edge, tuple[float, float]] = {}

        def send(
            src: str, sc_: str, dst: str, vec: npt.NDArray[np.float64], rq: float, rs: float
        ) -> None:
            for dc, frac in resolve(src, sc_, dst):
                v = vec * frac
                key = (dst, dc)
                load[key] = load.get(key, 0.0) + v
                e = (src, sc_, dst, dc)
                edge_rows[e] = edge_rows.get(e, 0.0) + v
                edge_kb[e] = (rq, rs)

        for i, (eid, c) in enumerate(self._comp):
            ing = next(d for d in sc.ingress if d.endpoint == eid and c in d.rps)
            vec = np.zeros(k)
            vec[i] = 1.0
            send(INGRESS, c, eid, vec, ing.request_kb, ing.response_kb)
        calls_rows: list[int] = []
        calls_cols: list[int] = []
        calls_vals: list[float] = []
        call_rtt = np.zeros(len(nodes))
        for eid in app.topo_order:
            e = app.endpoint(eid)
            for c in app.service_of(eid).clusters:
                x = load.get((eid, c))
                ni = node_ix[(eid, c)]
                for call in e.calls:
                    for dc, frac in resolve(e.service, c, call.to):
                        calls_rows.append(ni)
                        calls_cols.append(node_ix[(call.to, dc)])
                        calls_vals.append(call.per_request * frac)
                        call_rtt[ni] += call.per_request * frac * topo.rtt(c, dc)
                    if x is not None:
                        send(
                            e.service,
                            c,
                            call.to,
                            x * call.per_request,
                            call.request_kb,
                            call.response_kb,
                        )
        edges = tuple(e for e, v in edge_rows.items() if np.any(v > 0))
        edge_map = sp.csr_matrix(np.array([edge_rows[e] for e in edges]).reshape(len(edges), k))
        node_map = sp.csr_matrix(
            np.array([load.get(n, np.zeros(k)) for n in nodes]).reshape(len(nodes), k)
        )
        n = len(nodes)
        calls = sp.csr_matrix((calls_vals, (calls_rows, calls_cols)), shape=(n, n))
        flows = _Flows(
            edges=edges,
            edge_map=edge_map,
            edge_req_kb=np.array([edge_kb[e][0] for e in edges]),
            edge_resp_kb=np.array([edge_kb[e][1] for e in edges]),
            edge_rtt=np.array([topo.rtt(e[1], e[3]) for e in edges]),
            edge_node=np.array([node_ix[(e[2], e[3])] for e in edges], dtype=np.intp),
            nodes=tuple(nodes),
            node_map=node_map,
            node_station=np.array(
                [self._station_index[(split_endpoint_id(n_[0])[0], n_[1])] for n_ in nodes],
                dtype=np.intp,
            ),
            node_service_ms=np.array([app.endpoint(n_[0]).service_ms for n_ in nodes]),
            calls=calls,
            call_rtt=call_rtt,
            depth=len(app.topo_order) + 1,
        )
        if len(self._flow_cache) > 64:
            self._flow_cache.clear()
        self._flow_cache[ckey] = flows
        return flows

    # --- the truth now ---------------------------------------------------------------------------

    def latencies(
        self, demand: npt.NDArray[np.float64] | None = None, dt: float | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(edge rps, inclusive duration ms of each node) under the routing in force. With `dt`,
        each node's own time gets the noise of the mean of its ~rps*dt requests (relative sd
        `latency_cv`/sqrt(n)), and callers include their callees' realised times."""
        f = self._flows
        d = self.demand() if demand is None else demand
        node_rps = f.node_map @ d
        n_st = len(self._stations)
        work = np.bincount(f.node_station, weights=node_rps * f.node_service_ms, minlength=n_st)
        rps = np.bincount(f.node_station, weights=node_rps, minlength=n_st)
        wait = np.zeros(n_st)
        for i in np.nonzero(rps > 0)[0]:
            m = self._station_models[i]
            w = min(float(work[i]), 0.98 * m.capacity)
            wait[i] = m.queue_cost(w) / float(rps[i])
        own = f.node_service_ms + wait[f.node_station]
        if dt is not None and self.latency_cv > 0:
            n = np.maximum(node_rps * dt, 1.0)
            z = self.rng.normal(0.0, 1.0, len(own)) * self.latency_cv / np.sqrt(n)
            own = own * np.maximum(1.0 + z, 0.05)
        b = own + f.call_rtt
        t = b.copy()
        for _ in range(f.depth):
            nt = b + f.calls @ t
            if np.allclose(nt, t, rtol=0, atol=1e-9):
                t = nt
                break
            t = nt
        return f.edge_map @ d, t

    # --- scraping --------------------------------------------------------------------------------

    def _labels(self, e: Edge, reporter: str, pod: int) -> dict[str, str]:
        src, src_c, eid, dst_c = e
        dsvc, ep = split_endpoint_id(eid)
        src_name = GATEWAY_SERVICE if src == INGRESS else src
        pod_owner = (dsvc, dst_c) if reporter == "destination" else (src_name, src_c)
        labels = {
            "reporter": reporter,
            "source_canonical_service": src_name,
            "source_cluster": src_c,
            "destination_service_name": dsvc,
            "destination_service_namespace": self.namespace,
            "destination_cluster": dst_c,
            "response_code": "200",
            "pod": f"{pod_owner[0]}-{pod_owner[1]}-{pod}",
        }
        if ep:
            labels[self.endpoint_label] = ep
        labels.update(self.extra_labels)
        return labels

    def _register(self, edges: Sequence[Edge]) -> None:
        new = [e for e in edges if e not in self._edge_slot]
        if not new:
            return
        for e in new:
            self._edge_slot[e] = len(self._series_edges)
            self._series_edges.append(e)
        # series order: for each edge slot, reporter (source, destination), pod
        for e in new:
            for rep in ("source", "destination"):
                for p in range(self.pods):
                    base = self._labels(e, rep, p)
                    for name in self._metric_names():
                        key = self._key(name, base)
                        for kk in key:
                            self._keys.setdefault(name, []).append(kk)
        for name, keys in self._keys.items():
            st = self._state.get(name, np.zeros(0))
            if len(st) < len(keys):
                self._state[name] = np.concatenate([st, np.zeros(len(keys) - len(st))])

    def _metric_names(self) -> list[str]:
        names = [REQUESTS]
        for h in HISTOGRAMS:
            names += [f"{h}_sum", f"{h}_count"]
            if self.buckets:
                names.append(f"{h}_bucket")
        return names

    def _bucket_bounds(self, name: str) -> tuple[float, ...]:
        return DURATION_BUCKETS_MS if name.startswith(DURATION) else BYTES_BUCKETS

    def _key(self, name: str, base: Mapping[str, str]) -> list[LabelKey]:
        items = tuple(sorted(base.items()))
        if not name.endswith("_bucket"):
            return [items]
        les = [_fmt_le(b) for b in self._bucket_bounds(name)] + ["+Inf"]
        return [tuple(sorted((*items, ("le", le)))) for le in les]

    def scrape(self, t: float) -> dict[str, tuple[list[LabelKey], npt.NDArray[np.float64]]]:
        """Advance the truth to time `t` (unix s) and return every series' cumulative value:
        metric name -> (label keys, values). The first call only sets the clock (all zeros)."""
        f = self._flows
        self._register(f.edges)
        if self._last_t is not None:
            dt = t - self._last_t
            if dt <= 0:
                raise ValueError("scrapes must move forward in time")
            self._advance(dt)
        self._last_t = t
        self.scrapes += 1
        # demand drifts between scrapes (log-AR(1))
        if self.drift > 0:
            self._log_factor = 0.9 * self._log_factor + self.rng.normal(
                0, self.drift, len(self._comp)
            )
        self.last_scrape = {
            name: (self._keys[name], self._state[name].copy()) for name in self._keys
        }
        return self.last_scrape

    def _advance(self, dt: float) -> None:
        f = self._flows
        rng = self.rng
        demand = self.demand()
        _, node_t = self.latencies(demand, dt=dt)
        # Requests arrive at the gateways as Poisson counts; the calls they cause follow them
        # (fluid split), with a little independent jitter (requests in flight at the scrape).
        arrivals = rng.poisson(np.maximum(demand, 0.0) * dt).astype(float)
        fluid = f.edge_map @ arrivals
        jitter = (
            rng.normal(0.0, 1.0, len(fluid)) * np.sqrt(np.maximum(fluid, 0.0)) * self.call_jitter
        )
        n_edges_all = len(self._series_edges)
        slots = np.array([self._edge_slot[e] for e in f.edges], dtype=np.intp)
        counts = np.zeros(n_edges_all)
        x = np.maximum(fluid + jitter, 0.0)
        whole = np.floor(x)
        counts[slots] = whole + (rng.random(len(x)) < x - whole)  # unbiased integer counts
        dst_ms = np.zeros(n_edges_all)
        dst_ms[slots] = node_t[f.edge_node]
        rtt = np.zeros(n_edges_all)
        rtt[slots] = f.edge_rtt
        req_b = np.zeros(n_edges_all)
        req_b[slots] = f.edge_req_kb * 1000.0
        resp_b = np.zeros(n_edges_all)
        resp_b[slots] = f.edge_resp_kb * 1000.0
        n = counts
        dst_sum = n * dst_ms
        src_sum = dst_sum + n * rtt * (
            1.0 + rng.normal(0.0, 0.02, n_edges_all) / np.sqrt(np.maximum(n, 1.0))
        )
        bnoise = 1.0 + rng.normal(0.0, 0.05, (2, n_edges_all)) / np.sqrt(np.maximum(n, 1.0))
        rq_sum = n * req_b * bnoise[0]
        rs_sum = n * resp_b * bnoise[1]
        p = self.pods
        # per pod shares of each edge's requests, per reporter (independent splits)
        shares = {rep: self._split(n, p) for rep in ("source", "destination")}
        for name in self._keys:
            state = self._state[name]
            per_pod: list[npt.NDArray[np.float64]] = []
            for rep in ("source", "destination"):
                for pi in range(p):
                    share = shares[rep][pi]
                    frac = np.divide(share, n, out=np.zeros_like(n), where=n > 0)
                    if name == REQUESTS or name.endswith("_count"):
                        inc = share
                    elif name == f"{DURATION}_sum":
                        inc = frac * (src_sum if rep == "source" else dst_sum)
                    elif name == f"{REQUEST_BYTES}_sum":
                        inc = frac * rq_sum
                    elif name == f"{RESPONSE_BYTES}_sum":
                        inc = frac * rs_sum
                    else:  # buckets: cumulative counts per le, le-major within the series
                        bounds = np.array([*self._bucket_bounds(name), np.inf])
                        if name.startswith(DURATION):
                            mean = src_sum if rep == "source" else dst_sum
                            mean = np.divide(mean, n, out=np.ones_like(n), where=n > 0)
                            cdf = 1.0 - np.exp(-bounds[None, :] / np.maximum(mean, 1e-9)[:, None])
                        else:
                            size = req_b if name.startswith(REQUEST_BYTES) else resp_b
                            cdf = (bounds[None, :] >= size[:, None]).astype(float)
                        cdf[:, -1] = 1.0
                        inc = np.floor(share[:, None] * cdf + 1e-9)
                    per_pod.append(np.asarray(inc, dtype=float))
            # series order is edge-major: [edge][reporter][pod][le...]
            stacked = np.stack(per_pod, axis=1)  # edges x (2*p) [x les]
            state += stacked.reshape(-1)

    def _split(self, n: npt.NDArray[np.float64], pods: int) -> list[npt.NDArray[np.float64]]:
        if pods == 1:
            return [n]
        out = []
        left = n.astype(np.int64)
        for k in range(pods - 1):
            part = self.rng.binomial(left, 1.0 / (pods - k))
            out.append(part.astype(float))
            left = left - part
        out.append(left.astype(float))
        return out

    def reset_counters(self, service: str, cluster: str) -> None:
        """A pod restart: zero every series reported by `service`'s sidecars in `cluster`."""
        for name, keys in self._keys.items():
            state = self._state[name]
            for i, key in enumerate(keys):
                d = dict(key)
                rep = d.get("reporter")
                own = (
                    (d.get("destination_service_name"), d.get("destination_cluster"))
                    if rep == "destination"
                    else (d.get("source_canonical_service"), d.get("source_cluster"))
                )
                if own == (service, cluster):
                    state[i] = 0.0

    def run(
        self,
        store: MemoryBackend,
        start: float,
        end: float,
        step: float,
        *,
        drop: float = 0.0,
    ) -> int:
        """Scrape every `step` seconds from `start` to `end` (inclusive) into `store`. `drop`: the
        share of series left out of each scrape (a partial scrape). Returns the scrape count."""
        count = 0
        t = start
        while t <= end + 1e-9:
            self.write(store, t, drop=drop)
            count += 1
            t += step
        return count

    def write(self, store: MemoryBackend, t: float, *, drop: float = 0.0) -> None:
        """One scrape at `t` into `store`."""
        for name, (keys, values) in self.scrape(t).items():
            if drop > 0:
                keep = self.rng.random(len(keys)) >= drop
                store.append(
                    t, name, [k for k, ok in zip(keys, keep, strict=True) if ok], values[keep]
                )
            else:
                store.append(t, name, keys, values)


def _fmt_le(b: float) -> str:
    return repr(float(b)) if b != int(b) else f"{int(b)}"


# --- A live exporter (prometheus-client) ---------------------------------------------------------


class LiveCollector:
    """A prometheus-client collector: every collection advances `gen` to the wall clock and
    exposes the counters (optionally recording the same scrape into `store`), so a real
    Prometheus scraping it sees the simulated mesh continue after its backfilled history."""

    def __init__(
        self, gen: IstioMetrics, store: MemoryBackend | None = None, clock: Any = None
    ) -> None:
        import threading
        import time

        self.gen = gen
        self.store = store
        self.clock = clock or time.time
        self.lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # so registering does not collect (which would advance the simulation)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        with self.lock:
            t = float(self.clock())
            if self.store is not None:
                self.gen.write(self.store, t)
                scrape = {m: self.gen.last_scrape[m] for m in self.gen.last_scrape}
            else:
                scrape = self.gen.scrape(t)
        families: dict[str, Any] = {}
        for name, (keys, values) in scrape.items():
            if name.endswith("_total"):
                fam, typ = name[: -len("_total")], "counter"
            else:
                fam, typ = name.rsplit("_", 1)[0], "histogram"
            metric = families.get(fam)
            if metric is None:
                metric = families[fam] = Metric(fam, f"{fam} (slate simulator)", typ)
            for key, v in zip(keys, values, strict=True):
                metric.add_sample(name, dict(key), float(v))
                if typ == "histogram" and name.endswith("_count") and not self.gen.buckets:
                    metric.add_sample(f"{fam}_bucket", {**dict(key), "le": "+Inf"}, float(v))
        yield from families.values()


def serve_metrics(collector: LiveCollector, port: int, host: str = "127.0.0.1") -> tuple[Any, Any]:
    """Serve `collector` on http://host:port/metrics (loopback by default); returns prometheus-
    client's (server, thread): `server.shutdown()` stops it."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return start_http_server(port, addr=host, registry=registry)


# --- OpenMetrics ----------------------------------------------------------------------------------


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _families(metrics: Sequence[str]) -> Iterator[tuple[str, str, list[str]]]:
    """(family, type, stored metric names) for the OpenMetrics TYPE lines."""
    names = set(metrics)
    for m in sorted(names):
        if m.endswith("_total"):
            yield m[: -len("_total")], "counter", [m]
    seen: set[str] = set()
    for m in sorted(names):
        for suffix in ("_sum", "_count", "_bucket"):
            if m.endswith(suffix):
                fam = m[: -len(suffix)]
                if fam not in seen:
                    seen.add(fam)
                    parts = [
                        f"{fam}{s}" for s in ("_bucket", "_sum", "_count") if f"{fam}{s}" in names
                    ]
                    yield fam, "histogram", parts


def write_openmetrics(
    store: MemoryBackend, out: IO[str] | str | Path, extra_labels: Mapping[str, str] | None = None
) -> int:
    """Every sample of `store` as OpenMetrics text (with timestamps) for `promtool tsdb
    create-blocks-from openmetrics`; `extra_labels` (e.g. job, instance) are added to every series
    so backfilled history continues the series a live scrape will add. Returns samples written."""
    if isinstance(out, str | Path):
        with open(out, "w", encoding="utf-8") as fh:
            return write_openmetrics(store, fh, extra_labels)
    extra = dict(extra_labels or {})
    written = 0
    for fam, kind, parts in _families(store.metrics()):
        out.write(f"# TYPE {fam} {kind}\n")
        if kind == "histogram" and f"{fam}_bucket" not in parts and f"{fam}_count" in parts:
            # no buckets stored: the +Inf bucket is the count (OpenMetrics wants one)
            for labels, pts in store.series(f"{fam}_count"):
                lt = _labels_text({**labels, **extra, "le": "+Inf"})
                out.writelines(f"{fam}_bucket{{{lt}}} {_num(v)} {t:.3f}\n" for t, v in pts)
                written += len(pts)
        for m in parts:
            for labels, pts in store.series(m):
                lt = _labels_text({**labels, **extra})
                out.writelines(f"{m}{{{lt}}} {_num(v)} {t:.3f}\n" for t, v in pts)
                written += len(pts)
    out.write("# EOF\n")
    return written
