"""The baselines slate is measured against (../shared/scenarios/REFERENCE.md).

- local: every call to the nearest cluster hosting the destination (Istio locality preference,
  no failover);
- global: split by replica count over all clusters (one flat Kubernetes Service across the mesh);
- waterfall: per destination service, each source cluster fills its nearest cluster up to 80% of
  capacity (ms of work per second, as the latency model's station gives it), the rest spills,
  largest overflow first, to the next nearest clusters with spare capacity; once all are full the
  rest is spread by replica count (Traffic Director's default 'waterfall by region'). Services are
  processed in call order, upstream first, so each one's demand is known from the routing of its
  callers.
"""

from __future__ import annotations

from collections import defaultdict

from slate.model.keys import INGRESS, RouteKey, route_keys, split_or_nearest
from slate.model.latency import LatencyModel
from slate.model.routing import Route, Routing
from slate.model.scenario import Scenario

WATERFALL_FILL = 0.8


def _routing(weights: dict[RouteKey, dict[str, float]]) -> Routing:
    return Routing(
        tuple(Route(k.from_service, k.from_cluster, k.to, w) for k, w in weights.items())
    )


def local_routing(scenario: Scenario) -> Routing:
    app, topo = scenario.app, scenario.topology
    return _routing(
        {
            k: dict(split_or_nearest(topo, k.from_cluster, app.service_of(k.to).clusters, None))
            for k in route_keys(scenario)
        }
    )


def global_routing(scenario: Scenario) -> Routing:
    app = scenario.app
    out: dict[RouteKey, dict[str, float]] = {}
    for k in route_keys(scenario):
        replicas = app.service_of(k.to).replicas
        total = sum(replicas.values())
        out[k] = {c: n / total for c, n in replicas.items()}
    return _routing(out)


def waterfall_routing(
    scenario: Scenario, fill: float = WATERFALL_FILL, latency: LatencyModel | None = None
) -> Routing:
    latency = latency or scenario.latency_model()
    app, topo = scenario.app, scenario.topology
    keys = route_keys(scenario)
    keys_into: dict[str, list[RouteKey]] = defaultdict(list)
    for k in keys:
        keys_into[app.service_of(k.to).name].append(k)
    ingress_rps: dict[tuple[str, str], float] = defaultdict(float)
    for d in scenario.ingress:
        for c, rps in d.rps.items():
            ingress_rps[(c, d.endpoint)] += rps

    loads: dict[tuple[str, str], float] = defaultdict(float)  # (endpoint, cluster) -> rps
    out: dict[RouteKey, dict[str, float]] = {}
    for sname in app.service_order:
        svc = app.service(sname)
        if not svc.replicas:
            continue
        # Call rate of every key into this service, and the work it brings per source cluster.
        rate: dict[RouteKey, float] = {}
        for k in keys_into.get(sname, []):
            if k.from_service == INGRESS:
                rate[k] = ingress_rps[(k.from_cluster, k.to)]
            else:
                src = app.service(k.from_service)
                rate[k] = sum(
                    call.per_request * loads[(e.id, k.from_cluster)]
                    for e in src.endpoints
                    for call in e.calls
                    if call.to == k.to
                )
        demand: dict[str, float] = defaultdict(float)
        for k, r in rate.items():
            demand[k.from_cluster] += r * app.endpoint(k.to).service_ms
        spare = {c: fill * latency.station(sname, c).capacity for c in svc.clusters}
        split = _waterfall_split(scenario, sname, dict(demand), spare)
        for k, r in rate.items():
            weights = dict(
                split_or_nearest(topo, k.from_cluster, svc.clusters, split.get(k.from_cluster))
            )
            out[k] = weights
            for c, w in weights.items():
                loads[(k.to, c)] += r * w
    return _routing({k: out[k] for k in keys if k in out})


def _waterfall_split(
    scenario: Scenario, service: str, demand: dict[str, float], spare: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Source cluster -> fraction of its demand (ms of work/s) sent to each destination cluster,
    given each destination cluster's `spare` work rate (ms/s) below the fill line."""
    topo = scenario.topology
    replicas = scenario.app.service(service).replicas
    clusters = list(replicas)
    spare = dict(spare)
    sent: dict[str, dict[str, float]] = {s: defaultdict(float) for s in demand}
    left = dict(demand)
    by_distance = {s: topo.by_distance(s, clusters) for s in demand}
    # 1. Each source fills its nearest cluster; sources hosting the service locally go first.
    for s in sorted(demand, key=lambda s: (by_distance[s][0] != s, topo.index(s))):
        near = by_distance[s][0]
        take = min(left[s], spare[near])
        sent[s][near] += take
        spare[near] -= take
        left[s] -= take
    # 2. Overflow, largest first, to the next nearest clusters with spare capacity.
    for s in sorted(demand, key=lambda s: (-left[s], topo.index(s))):
        for c in by_distance[s][1:]:
            if left[s] <= 0:
                break
            take = min(left[s], spare[c])
            sent[s][c] += take
            spare[c] -= take
            left[s] -= take
    # 3. All full: the rest by replica count.
    total_replicas = sum(replicas.values())
    for s in demand:
        if left[s] > 0:
            for c, n in replicas.items():
                sent[s][c] += left[s] * n / total_replicas
    return {
        s: {c: v / demand[s] for c, v in sent[s].items() if v > 0} for s in demand if demand[s] > 0
    }
