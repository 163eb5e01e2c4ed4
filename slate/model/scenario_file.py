"""Reading and validating scenario files (scenario-format.md, v1).

Two passes, so that every problem is reported against the field a user wrote:
1. shape: a pydantic schema of the file (types, required keys, signs);
2. meaning: names resolve (clusters, endpoints), the call graph is a DAG, called endpoints are
   deployed somewhere, every pair of clusters has an RTT.
Then the immutable domain values are built. Keys the format does not define are ignored (the
format allows extra optional keys).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slate.model.app import App, Call, Endpoint, Service, split_endpoint_id
from slate.model.demand import IngressDemand
from slate.model.errors import InputError, from_validation_error
from slate.model.files import load_document
from slate.model.scenario import Objective, Scenario
from slate.model.topology import Topology

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CallFile(_Model):
    to: Name
    per_request: NonNeg
    request_kb: NonNeg
    response_kb: NonNeg


class EndpointFile(_Model):
    service_ms: NonNeg
    calls: list[CallFile] | None = None


class ServiceFile(_Model):
    replicas: dict[str, Annotated[int, Field(ge=0)]] | None = None
    endpoints: dict[str, EndpointFile]


class ObjectiveFile(_Model):
    cost_weight_ms_per_usd_hour: NonNeg = 0.0
    max_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9


class IngressFile(_Model):
    endpoint: Name
    rps: dict[str, NonNeg]
    request_kb: NonNeg
    response_kb: NonNeg


class ScenarioFile(_Model):
    name: str = ""
    clusters: Annotated[list[Name], Field(min_length=1)]
    rtt_ms: dict[str, dict[str, NonNeg]] = Field(default_factory=dict)
    egress_usd_per_gb: dict[str, NonNeg | dict[str, NonNeg]] = Field(default_factory=dict)
    objective: ObjectiveFile = ObjectiveFile()
    services: Annotated[dict[str, ServiceFile], Field(min_length=1)]
    ingress: Annotated[list[IngressFile], Field(min_length=1)]


def _check_cluster(name: str, clusters: list[str], path: str) -> None:
    if name not in clusters:
        raise InputError(path, f"unknown cluster {name!r} (clusters: {', '.join(clusters)})")


def _topology(f: ScenarioFile) -> Topology:
    clusters = f.clusters
    seen: set[str] = set()
    for i, c in enumerate(clusters):
        if c in seen:
            raise InputError(f"clusters[{i}]", f"duplicate cluster {c!r}")
        seen.add(c)
    n = len(clusters)
    idx = {c: i for i, c in enumerate(clusters)}
    rtt: list[list[float | None]] = [[None] * n for _ in range(n)]
    for a, row in f.rtt_ms.items():
        _check_cluster(a, clusters, f"rtt_ms.{a}")
        for b, v in row.items():
            _check_cluster(b, clusters, f"rtt_ms.{a}.{b}")
            rtt[idx[a]][idx[b]] = v
    for i in range(n):
        if rtt[i][i] is None:
            rtt[i][i] = 0.0
        for j in range(n):
            if rtt[i][j] is None:
                rtt[i][j] = rtt[j][i]
    for i in range(n):
        for j in range(n):
            if rtt[i][j] is None:
                raise InputError(
                    f"rtt_ms.{clusters[min(i, j)]}.{clusters[max(i, j)]}",
                    f"is required: no RTT between {clusters[i]} and {clusters[j]}",
                )
    default = 0.0
    prices: dict[tuple[str, str], float] = {}
    for a, row_or_default in f.egress_usd_per_gb.items():
        if a == "default":
            if isinstance(row_or_default, dict):
                raise InputError("egress_usd_per_gb.default", "must be a number (USD per GB)")
            default = row_or_default
            continue
        _check_cluster(a, clusters, f"egress_usd_per_gb.{a}")
        if not isinstance(row_or_default, dict):
            raise InputError(
                f"egress_usd_per_gb.{a}", "must map destination clusters to USD per GB"
            )
        for b, v in row_or_default.items():
            _check_cluster(b, clusters, f"egress_usd_per_gb.{a}.{b}")
            prices[(a, b)] = v
    egress = tuple(
        tuple(0.0 if a == b else prices.get((a, b), default) for b in clusters) for a in clusters
    )
    return Topology(
        clusters=tuple(clusters),
        rtt_ms=tuple(tuple(float(x) for x in row if x is not None) for row in rtt),
        egress_usd_per_gb=egress,
    )


def _app(f: ScenarioFile) -> App:
    clusters = f.clusters
    endpoints: set[str] = set()
    for sname, s in f.services.items():
        if "." in sname:
            raise InputError(f"services.{sname}", "a service name must not contain '.'")
        if not s.endpoints:
            raise InputError(f"services.{sname}.endpoints", "must name at least one endpoint")
        for c in s.replicas or {}:
            _check_cluster(c, clusters, f"services.{sname}.replicas.{c}")
        for ename in s.endpoints:
            if "." in ename:
                raise InputError(
                    f"services.{sname}.endpoints.{ename}", "an endpoint name must not contain '.'"
                )
            endpoints.add(f"{sname}.{ename}")

    def deployed(eid: str) -> bool:
        svc = f.services[split_endpoint_id(eid)[0]]
        return any(n > 0 for n in (svc.replicas or {}).values())

    for sname, s in f.services.items():
        for ename, e in s.endpoints.items():
            for i, call in enumerate(e.calls or []):
                path = f"services.{sname}.endpoints.{ename}.calls[{i}].to"
                if call.to not in endpoints:
                    raise InputError(path, f"unknown endpoint {call.to!r} (want service.endpoint)")
                if not deployed(call.to):
                    raise InputError(
                        path,
                        f"{call.to!r} belongs to service {split_endpoint_id(call.to)[0]!r}, "
                        "which has no replicas in any cluster",
                    )
    services = tuple(
        Service(
            name=sname,
            replicas=dict(s.replicas or {}),
            endpoints=tuple(
                Endpoint(
                    service=sname,
                    name=ename,
                    service_ms=e.service_ms,
                    calls=tuple(
                        Call(c.to, c.per_request, c.request_kb, c.response_kb)
                        for c in (e.calls or [])
                    ),
                )
                for ename, e in s.endpoints.items()
            ),
        )
        for sname, s in f.services.items()
    )
    app = App(services)
    _check_acyclic(app)
    return app


def _check_acyclic(app: App) -> None:
    """Report one cycle of the endpoint call graph, as a path of endpoints."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(eid: str) -> list[str] | None:
        state[eid] = 1
        stack.append(eid)
        for call in app.endpoint(eid).calls:
            if state.get(call.to) == 1:
                return [*stack[stack.index(call.to) :], call.to]
            if call.to not in state:
                cycle = visit(call.to)
                if cycle:
                    return cycle
        stack.pop()
        state[eid] = 2
        return None

    for eid in app.endpoints:
        if eid not in state:
            cycle = visit(eid)
            if cycle:
                svc, ep = split_endpoint_id(cycle[0])
                raise InputError(
                    f"services.{svc}.endpoints.{ep}.calls",
                    "the call graph has a cycle: " + " -> ".join(cycle),
                )


def _ingress(f: ScenarioFile, app: App) -> tuple[IngressDemand, ...]:
    out = []
    for i, ing in enumerate(f.ingress):
        path = f"ingress[{i}]"
        if ing.endpoint not in app.endpoints:
            raise InputError(
                f"{path}.endpoint", f"unknown endpoint {ing.endpoint!r} (want service.endpoint)"
            )
        if not app.service_of(ing.endpoint).replicas:
            raise InputError(
                f"{path}.endpoint",
                f"service {split_endpoint_id(ing.endpoint)[0]!r} has no replicas in any cluster",
            )
        for c in ing.rps:
            _check_cluster(c, f.clusters, f"{path}.rps.{c}")
        out.append(IngressDemand(ing.endpoint, dict(ing.rps), ing.request_kb, ing.response_kb))
    if sum(d.total_rps for d in out) <= 0:
        raise InputError("ingress", "the total ingress rate is zero")
    return tuple(out)


def scenario_from_dict(data: Any) -> Scenario:
    if not isinstance(data, dict):
        raise InputError("", "a scenario must be a YAML mapping (see scenario-format.md)")
    try:
        f = ScenarioFile.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e, data) from None
    topology = _topology(f)
    app = _app(f)
    ingress = _ingress(f, app)
    objective = Objective(
        cost_weight_ms_per_usd_hour=f.objective.cost_weight_ms_per_usd_hour,
        max_utilization=f.objective.max_utilization,
    )
    assert all(math.isfinite(x) for row in topology.rtt_ms for x in row)
    return Scenario(f.name, topology, app, ingress, objective)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise InputError naming the file and the bad field."""
    return load_document(path, "scenario", "yaml", scenario_from_dict)
