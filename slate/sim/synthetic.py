"""Seeded synthetic multi-cluster applications, as scenario files (scenario-format.md).

`synthetic_dict(spec)` returns a plain dict in the scenario-file format, ready for `yaml.safe_dump`
and `slate solve`; `synthetic_scenario(spec)` parses it with `scenario_from_dict`. The same spec
(seed included) always gives the same file.

What the generator draws, and why it looks like a real mesh:

- **Clusters** are cloud regions at their real latitude/longitude, North America first, then
  Europe, then the rest of the world (clusters beyond the list are second zones a few hundred km
  from the first ones). RTT is the great-circle distance at the speed of
  light in fiber (~100 km per ms of round trip), inflated 1.3-1.7x for indirect paths, plus 1 ms.
  Egress is priced per GB roughly like public clouds: cheap inside a continent, dearer across, and
  dearest out of South America, Africa and Asia-Pacific.
- **Services** form a layered call graph: entry services (frontends, one endpoint per traffic
  class), one to four mid tiers, then leaf stores (databases, caches) that call nothing. Every
  endpoint of a tier calls one to three endpoints of deeper tiers (mostly the next one), with
  `per_request` multipliers (mostly 1; 2-3 for batched look-ups; 0.2-0.5 for cache misses that
  fall through to a database). Endpoints are heavy (median 8 ms of work) or light (median 1 ms).
  Every endpoint below the entry tier is called by someone.
- **Traffic classes** are the entry endpoints: each gets its own ingress demand and calls a
  distinct set of next-tier endpoints, so the classes take distinct endpoint-level paths and are
  routed separately.
- **Deployment**: the busier half of the clusters are hubs that run nearly all of the stack and
  some of the stores; the other clusters run the entry tier, about half of the mid tiers and few
  stores. Every service runs somewhere. With `everywhere`, every service runs in every cluster.
- **Demand** is skewed by region (Zipf over a random ranking of the clusters), while replicas follow
  the regional demand only partly (`capacity_follows_demand`), so at higher loads routing every call
  to the local cluster overloads the popular regions.
- **Load**: replicas are sized per service around `target_utilization` (with some spread, and at
  least one replica per deployed cluster), then the ingress is scaled so that the total work over
  the total capacity of all stations, a routing-independent figure, equals `target_utilization`
  (up to the rounding of the rps to 0.01). A target close to or above `max_utilization` leaves
  some services short of capacity.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import yaml

from slate.model.scenario import Scenario
from slate.model.scenario_file import scenario_from_dict

# name, latitude, longitude, continent
_REGIONS: tuple[tuple[str, float, float, str], ...] = (
    ("us-east", 38.9, -77.4, "na"),
    ("us-west", 45.6, -121.2, "na"),
    ("us-central", 41.3, -95.9, "na"),
    ("eu-west", 53.3, -6.3, "eu"),
    ("eu-central", 50.1, 8.7, "eu"),
    ("ca-central", 45.5, -73.6, "na"),
    ("eu-north", 59.3, 18.1, "eu"),
    ("ap-northeast", 35.7, 139.7, "ap"),
    ("ap-southeast", 1.35, 103.8, "ap"),
    ("sa-east", -23.5, -46.6, "sa"),
    ("ap-south", 19.1, 72.9, "ap"),
    ("eu-south", 45.5, 9.2, "eu"),
    ("au-southeast", -33.9, 151.2, "au"),
    ("ap-east", 22.3, 114.2, "ap"),
    ("me-central", 25.2, 55.3, "me"),
    ("af-south", -33.9, 18.4, "af"),
)
"""name, latitude, longitude, continent; a mesh of n clusters takes the first n (North America,
then Europe, then the rest of the world), then second zones of them."""
# USD per GB leaving a continent for another one; inside a continent it is _SAME_CONTINENT_USD.
_CROSS_CONTINENT_USD = {
    "na": 0.02,
    "eu": 0.02,
    "ap": 0.09,
    "au": 0.098,
    "me": 0.11,
    "sa": 0.138,
    "af": 0.147,
}
_SAME_CONTINENT_USD = 0.01
_DEFAULT_USD = 0.02

_ENTRY_NAMES = ("frontend", "api-gateway", "mobile-bff", "web", "partner-api", "admin")
_MID_NAMES = (
    "catalog", "cart", "checkout", "search", "recommend", "profile", "auth", "pricing",
    "inventory", "shipping", "payment", "reviews", "ads", "geo", "rate", "notify", "orders",
    "session", "media", "feed",
)  # fmt: skip
_STORE_NAMES = (
    "user-db", "catalog-db", "cart-redis", "order-db", "media-store", "rate-memcached",
    "session-redis", "geo-db", "review-db", "inventory-db",
)  # fmt: skip
_CLASS_NAMES = (
    "home", "browse", "search", "product", "cart", "checkout", "login", "recommend", "reserve",
    "review", "orders", "profile",
)  # fmt: skip
_MID_ENDPOINTS = ("get", "list", "query", "update", "create", "batch")
_STORE_ENDPOINTS = ("find", "get", "put", "scan", "insert")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Every draw comes from `seed`."""

    clusters: int = 3
    services: int = 12
    endpoints_per_service: int = 2
    """Endpoints of each service below the entry tier."""
    traffic_classes: int | None = None
    """Entry endpoints with their own ingress demand; default: 2 per entry service."""
    seed: int = 0
    target_utilization: float = 0.6
    """Total work / total capacity over all stations (routing-independent)."""
    max_utilization: float = 0.9
    cost_weight: float = 0.0
    """objective.cost_weight_ms_per_usd_hour."""
    ingress_skew: float = 1.0
    """Zipf exponent of the regional popularity of the ingress (0 = even)."""
    capacity_follows_demand: float = 0.6
    """0: replicas spread evenly over a service's clusters; 1: in proportion to regional demand."""
    name: str | None = None
    everywhere: bool = False
    """Deploy every service in every cluster (the densest LP: every key can go anywhere)."""

    def __post_init__(self) -> None:
        if self.clusters < 1 or self.services < 1 or self.endpoints_per_service < 1:
            raise ValueError("clusters, services and endpoints_per_service must be >= 1")
        if self.traffic_classes is not None and self.traffic_classes < 1:
            raise ValueError("traffic_classes must be >= 1")
        if self.target_utilization <= 0:
            raise ValueError("target_utilization must be > 0")
        if not 0 < self.max_utilization <= 1:
            raise ValueError("max_utilization must be in (0, 1]")
        if self.cost_weight < 0 or self.ingress_skew < 0:
            raise ValueError("cost_weight and ingress_skew must be >= 0")
        if not 0 <= self.capacity_follows_demand <= 1:
            raise ValueError("capacity_follows_demand must be in [0, 1]")

    @property
    def entry_services(self) -> int:
        if self.services == 1:
            return 1
        by_size = max(1, round(self.services / 10))
        if self.traffic_classes is not None:
            by_size = max(by_size, math.ceil(self.traffic_classes / 4))
        return min(by_size, self.services - 1)

    @property
    def classes(self) -> int:
        if self.traffic_classes is not None:
            return max(self.traffic_classes, self.entry_services)
        return 2 * self.entry_services

    @property
    def label(self) -> str:
        return self.name or (
            f"synthetic-{self.clusters}c-{self.services}s-{self.endpoints_per_service}e"
            f"-{self.classes}t-seed{self.seed}" + ("-everywhere" if self.everywhere else "")
        )


SLATE_SIZED = SyntheticSpec(
    clusters=10,
    services=16,
    endpoints_per_service=2,
    traffic_classes=10,
    name="slate-sized",
)
"""The size of SLATE's (NSDI'26) largest published run: 10 clusters, 16 services, 10 traffic
classes (its Gurobi model took 22 s)."""


def slate_sized(seed: int = 0, **changes: Any) -> SyntheticSpec:
    return replace(SLATE_SIZED, seed=seed, **changes)


@dataclass
class _Endpoint:
    name: str
    service_ms: float
    calls: list[tuple[int, float, float, float]] = field(default_factory=list)
    """(callee endpoint index, per_request, request_kb, response_kb)."""


@dataclass
class _Service:
    name: str
    tier: int
    store: bool
    endpoints: list[int] = field(default_factory=list)  # global endpoint indices
    replicas: dict[int, int] = field(default_factory=dict)  # cluster index -> replicas


def _name(pool: Sequence[str], i: int) -> str:
    base = pool[i % len(pool)]
    return base if i < len(pool) else f"{base}-{i // len(pool) + 1}"


def _regions(n: int, rng: np.random.Generator) -> list[tuple[str, float, float, str]]:
    """The first n regions of the list, then second zones a few hundred km from them."""
    base = len(_REGIONS)
    out = list(_REGIONS[:n])
    for j in range(n - base):
        name, lat, lon, cont = _REGIONS[j % base]
        shift_km = rng.uniform(200.0, 800.0)
        bearing = rng.uniform(0.0, 2 * math.pi)
        lat2 = lat + shift_km / 111.0 * math.sin(bearing)
        lon2 = lon + shift_km / (111.0 * max(math.cos(math.radians(lat)), 0.2)) * math.cos(bearing)
        out.append((f"{name}-{j // base + 2}", lat2, lon2, cont))
    return out


def _great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


def _kb(rng: np.random.Generator, median: float) -> float:
    return round(max(0.05, _lognormal(rng, median, 0.8)), 2)


def _per_request(rng: np.random.Generator, to_store: bool) -> float:
    u = rng.random()
    if to_store and u < 0.3:
        return float(rng.choice([0.2, 0.3, 0.5]))  # cache misses falling through
    if u < 0.85:
        return 1.0
    return 2.0 if u < 0.95 else 3.0  # batched look-ups


def _fan_out(rng: np.random.Generator, entry: bool) -> int:
    """Distinct callees of one endpoint: entry endpoints fan out wider than inner ones."""
    return int(rng.choice([1, 2, 3], p=[0.2, 0.5, 0.3] if entry else [0.5, 0.35, 0.15]))


def _tiers(spec: SyntheticSpec) -> list[tuple[int, bool]]:
    """(tier, is store) for each service, entry services first."""
    n_entry = spec.entry_services
    rest = spec.services - n_entry
    n_store = 0 if rest < 2 else max(1, round(0.3 * rest))
    n_mid = rest - n_store
    depth = min(3, max(1, round(math.log2(n_mid + 1)))) if n_mid else 0
    out = [(0, False)] * n_entry
    for i in range(n_mid):
        out.append((1 + i * depth // n_mid, False))
    out += [(depth + 1, True)] * n_store
    return out


def synthetic_dict(spec: SyntheticSpec | None = None) -> dict[str, Any]:
    """A synthetic scenario in the scenario-file format (a plain, YAML-safe dict)."""
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(spec.seed)
    n_c = spec.clusters

    # Topology.
    regions = _regions(n_c, rng)
    cnames = [r[0] for r in regions]
    rtt = np.zeros((n_c, n_c))
    price = np.zeros((n_c, n_c))
    for i in range(n_c):
        for j in range(i + 1, n_c):
            km = _great_circle_km(regions[i][1:3], regions[j][1:3])
            rtt[i, j] = rtt[j, i] = round(1.0 + km / 100.0 * rng.uniform(1.3, 1.7), 1)
        for j in range(n_c):
            if i != j:
                same = regions[i][3] == regions[j][3]
                price[i, j] = _SAME_CONTINENT_USD if same else _CROSS_CONTINENT_USD[regions[i][3]]

    # Services, tiers and endpoints.
    services: list[_Service] = []
    endpoints: list[_Endpoint] = []
    counts = {"entry": 0, "mid": 0, "store": 0}
    n_entry = spec.entry_services
    classes = spec.classes
    for s, (tier, store) in enumerate(_tiers(spec)):
        kind = "store" if store else ("entry" if tier == 0 else "mid")
        svc_names = {"entry": _ENTRY_NAMES, "mid": _MID_NAMES, "store": _STORE_NAMES}[kind]
        svc = _Service(_name(svc_names, counts[kind]), tier, store)
        counts[kind] += 1
        if kind == "entry":
            n_ep = classes // n_entry + (1 if s < classes % n_entry else 0)
            names = [_name(_CLASS_NAMES, s + k * n_entry) for k in range(n_ep)]
        else:
            n_ep = spec.endpoints_per_service
            names = [_name(_STORE_ENDPOINTS if store else _MID_ENDPOINTS, k) for k in range(n_ep)]
        for ename in names:
            if store:
                cache = any(k in svc.name for k in ("redis", "memcached"))
                ms = _lognormal(rng, 0.4 if cache else 2.0, 0.5)
            else:
                heavy = rng.random() < 0.3
                ms = _lognormal(rng, 8.0 if heavy else 1.0, 0.5)
            svc.endpoints.append(len(endpoints))
            endpoints.append(_Endpoint(ename, round(max(ms, 0.05), 2)))
        services.append(svc)
    svc_of = {e: s for s, svc in enumerate(services) for e in svc.endpoints}
    max_tier = max(svc.tier for svc in services)
    by_tier = [
        [e for svc in services if svc.tier == t for e in svc.endpoints] for t in range(max_tier + 1)
    ]

    # Calls: first make sure every endpoint below the entry tier has a caller in the tier above,
    # then top each caller up to its own fan-out of 1-3 (mostly into the next tier).
    fan_out = {e: _fan_out(rng, t == 0) for t in range(max_tier) for e in by_tier[t]}
    callees: dict[int, list[int]] = {e: [] for e in fan_out}
    for t in range(1, max_tier + 1):
        for e in by_tier[t]:
            upper = [c for u in range(t) for c in by_tier[u]]
            above = by_tier[t - 1]
            free = [c for c in above if len(callees[c]) < fan_out[c]]
            callers = free or [c for c in upper if len(callees[c]) < fan_out[c]]
            if not callers:  # every slot taken: widen one of the least busy callers above
                least = min(len(callees[c]) for c in above)
                callers = [c for c in above if len(callees[c]) == least]
            callees[callers[int(rng.integers(len(callers)))]].append(e)
    seen_sets: set[frozenset[int]] = set()
    for t in range(max_tier):
        deeper = [c for u in range(t + 1, max_tier + 1) for c in by_tier[u]]
        for e in by_tier[t]:
            for _attempt in range(20):
                chosen = list(callees[e])
                while len(chosen) < min(fan_out[e], len(deeper)):
                    nearby = rng.random() < 0.6
                    pool = [c for c in (by_tier[t + 1] if nearby else deeper) if c not in chosen]
                    pool = pool or [c for c in deeper if c not in chosen]
                    chosen.append(pool[int(rng.integers(len(pool)))])
                # Traffic classes take distinct paths: entry endpoints call distinct sets.
                if t > 0 or frozenset(chosen) not in seen_sets:
                    break
            if t == 0:
                seen_sets.add(frozenset(chosen))
            callees[e] = chosen
    for e, chosen in callees.items():
        for c in chosen:
            to_store = services[svc_of[c]].store
            endpoints[e].calls.append(
                (c, _per_request(rng, to_store), _kb(rng, 0.5), _kb(rng, 6.0 if to_store else 3.0))
            )

    # Regional demand: Zipf popularity over a random ranking of the clusters.
    ranks = rng.permutation(n_c) + 1
    popularity = ranks.astype(float) ** -spec.ingress_skew
    popularity /= popularity.sum()
    entry_eps = by_tier[0]
    class_share = np.array([_lognormal(rng, 1.0, 0.7) for _ in entry_eps])
    class_share /= class_share.sum()
    base_rps = 300.0 * n_c
    ingress_rps = np.zeros((len(entry_eps), n_c))
    for k in range(len(entry_eps)):
        mix = popularity * np.exp(0.2 * rng.standard_normal(n_c))
        ingress_rps[k] = base_rps * class_share[k] * mix / mix.sum()

    # Deployment: the busier half of the clusters are hubs that run most of the stack; the rest
    # are edges with the entry tier and some of the rest. Entry services run everywhere, stores
    # in a few hubs (at least one cluster each).
    hubs = set(np.argsort(ranks)[: (n_c + 1) // 2].tolist())
    for svc in services:
        if svc.tier == 0 or spec.everywhere:
            deployed = list(range(n_c))
        else:
            p_hub, p_edge = (0.6, 0.1) if svc.store else (0.9, 0.5)
            deployed = [c for c in range(n_c) if rng.random() < (p_hub if c in hubs else p_edge)]
            if not deployed:
                deployed = [int(rng.choice(sorted(hubs)))]
        svc.replicas = dict.fromkeys(deployed, 0)

    # Routing-independent totals (calls only go to deeper tiers: tier order is a topological one).
    totals = np.zeros(len(endpoints))
    for k, e in enumerate(entry_eps):
        totals[e] += ingress_rps[k].sum()
    for t in range(max_tier + 1):
        for e in by_tier[t]:
            for c, mult, _, _ in endpoints[e].calls:
                totals[c] += totals[e] * mult

    # Replicas: each service sized for about the target utilization (a little spread), on a
    # load scaled so that a typical service runs a few replicas per cluster.
    work = np.array(
        [sum(totals[e] * endpoints[e].service_ms for e in s.endpoints) for s in services]
    )
    n_dep = np.array([len(s.replicas) for s in services])
    per_cluster = work / (1000.0 * spec.target_utilization * n_dep)
    typical = float(np.median(per_cluster[work > 0])) if (work > 0).any() else 1.0
    scale = 3.0 / typical
    work *= scale
    for s, svc in enumerate(services):
        deployed = sorted(svc.replicas)
        u = spec.target_utilization * float(np.clip(_lognormal(rng, 1.0, 0.1), 0.8, 1.2))
        total = max(len(deployed), math.ceil(work[s] / (1000.0 * u)))
        # Regional demand reaching each deployed cluster if every cluster called its nearest one.
        pull = np.zeros(len(deployed))
        for c in range(n_c):
            pull[int(np.argmin(rtt[c, deployed]))] += popularity[c]
        f = spec.capacity_follows_demand
        share = (1 - f) / len(deployed) + f * pull / pull.sum()
        extra = (total - len(deployed)) * share
        reps = np.floor(extra).astype(int)
        for i in np.argsort(-(extra - reps), kind="stable")[: total - len(deployed) - reps.sum()]:
            reps[i] += 1
        svc.replicas = {c: 1 + int(r) for c, r in zip(deployed, reps, strict=True)}

    # Then scale the ingress so that total work / total capacity is exactly the target (integer
    # replicas round capacity up, so this raises the load by a few percent).
    capacity_all = 1000.0 * sum(sum(svc.replicas.values()) for svc in services)
    work_all = float(work.sum())
    if work_all > 0:
        scale *= spec.target_utilization * capacity_all / work_all
    rps = np.round(ingress_rps * scale, 2)

    return _to_dict(spec, cnames, rtt, price, services, endpoints, entry_eps, rps, rng)


def _num(x: float) -> float | int:
    """Whole numbers print as integers in the YAML."""
    return int(x) if float(x).is_integer() else x


def _to_dict(
    spec: SyntheticSpec,
    cnames: list[str],
    rtt: np.ndarray,
    price: np.ndarray,
    services: list[_Service],
    endpoints: list[_Endpoint],
    entry_eps: list[int],
    ingress_rps: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    n_c = len(cnames)
    svc_of = {e: svc for svc in services for e in svc.endpoints}

    def eid(e: int) -> str:
        return f"{svc_of[e].name}.{endpoints[e].name}"

    egress: dict[str, Any] = {"default": _DEFAULT_USD}
    for i in range(n_c):
        row = {cnames[j]: float(price[i, j]) for j in range(n_c) if j != i}
        row = {b: p for b, p in row.items() if p != _DEFAULT_USD}
        if row:
            egress[cnames[i]] = row
    services_out: dict[str, Any] = {}
    for svc in services:
        eps: dict[str, Any] = {}
        for e in svc.endpoints:
            ep = endpoints[e]
            body: dict[str, Any] = {"service_ms": ep.service_ms}
            if ep.calls:
                body["calls"] = [
                    {"to": eid(c), "per_request": _num(m), "request_kb": rq, "response_kb": rs}
                    for c, m, rq, rs in ep.calls
                ]
            eps[ep.name] = body
        services_out[svc.name] = {
            "replicas": {cnames[c]: n for c, n in sorted(svc.replicas.items())},
            "endpoints": eps,
        }
    ingress = [
        {
            "endpoint": eid(e),
            "rps": {cnames[c]: float(ingress_rps[k, c]) for c in range(n_c)},
            "request_kb": _kb(rng, 1.0),
            "response_kb": _kb(rng, 20.0),
        }
        for k, e in enumerate(entry_eps)
    ]
    return {
        "name": spec.label,
        "clusters": cnames,
        "rtt_ms": {
            cnames[i]: {cnames[j]: float(rtt[i, j]) for j in range(i + 1, n_c)}
            for i in range(n_c - 1)
        },
        "egress_usd_per_gb": egress,
        "objective": {
            "cost_weight_ms_per_usd_hour": float(spec.cost_weight),
            "max_utilization": float(spec.max_utilization),
        },
        "services": services_out,
        "ingress": ingress,
    }


def synthetic_scenario(spec: SyntheticSpec | None = None) -> Scenario:
    """The parsed Scenario of `synthetic_dict(spec)`."""
    return scenario_from_dict(synthetic_dict(spec))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m slate.sim.synthetic [options] > app.yaml`, then `slate solve app.yaml`."""
    p = argparse.ArgumentParser(
        prog="python -m slate.sim.synthetic", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--preset", choices=["slate"], help="SLATE-sized: 10 clusters, 16 services, 10 classes"
    )
    p.add_argument("--clusters", type=int)
    p.add_argument("--services", type=int)
    p.add_argument("--endpoints", type=int, help="endpoints per service below the entry tier")
    p.add_argument("--classes", type=int, help="traffic classes (entry endpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utilization", type=float, help="target mean utilization")
    p.add_argument("--cost-weight", type=float, help="ms per USD/hour")
    p.add_argument("--everywhere", action="store_true", help="every service in every cluster")
    args = p.parse_args(argv)
    spec = SLATE_SIZED if args.preset == "slate" else SyntheticSpec()
    changes: dict[str, Any] = {"seed": args.seed, "everywhere": args.everywhere}
    for arg, key in (
        ("clusters", "clusters"),
        ("services", "services"),
        ("endpoints", "endpoints_per_service"),
        ("classes", "traffic_classes"),
        ("utilization", "target_utilization"),
        ("cost_weight", "cost_weight"),
    ):
        if getattr(args, arg) is not None:
            changes[key] = getattr(args, arg)
    spec = replace(spec, **changes)
    yaml.safe_dump(synthetic_dict(spec), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
