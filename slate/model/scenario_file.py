"""Reading and validating scenario files (scenario-format.md, v1).

Two passes, so that every problem is reported against the field a user wrote:
1. shape: a pydantic schema of the file (types, required keys, signs);
2. meaning: names resolve (clusters, endpoints), the call graph is a DAG, called endpoints are
   deployed somewhere, every pair of clusters has an RTT.
Then the immutable domain values are built. Keys the format does not define are allowed (the
format allows extra optional keys) but reported by `unknown_keys`, with the nearest known key, so a
typo (`max_utilisation`, `call:`) is not silently dropped; `strict=True` makes them errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from slate.model.app import App, Call, Endpoint, Service, split_endpoint_id
from slate.model.demand import IngressDemand
from slate.model.errors import (
    InputError,
    from_validation_error,
    join_path,
    quote,
    report_unknown,
    unknown_key,
)
from slate.model.files import load_document, warn_with_source
from slate.model.routing import INGRESS
from slate.model.scenario import Objective, Scenario
from slate.model.topology import Topology

TINY = 1e-6
"""Smallest non-zero magnitude of any number field: below it, float arithmetic (and the LP's
tolerances) stop meaning what the user wrote."""


def _not_tiny(x: float) -> float:
    if 0 < abs(x) < TINY:
        raise PydanticCustomError("tiny_number", "must be 0 or >= {tiny}", {"tiny": TINY})
    return x


_NotTiny = AfterValidator(_not_tiny)
_Finite = {"ge": 0, "allow_inf_nan": False}
# Limits of every number field (docs/scenario-format.md, "Limits"): finite, 0 or >= TINY, and
MAX_REPLICAS = 10_000
Ms = Annotated[float, Field(le=1e5, **_Finite), _NotTiny]  # service_ms, rtt_ms: up to 100 s
Kb = Annotated[float, Field(le=1e6, **_Finite), _NotTiny]  # request/response_kb: up to 1 GB
Rps = Annotated[float, Field(le=1e7, **_Finite), _NotTiny]
PerRequest = Annotated[float, Field(le=1e3, **_Finite), _NotTiny]
UsdPerGb = Annotated[float, Field(le=1e3, **_Finite), _NotTiny]
CostWeight = Annotated[float, Field(le=1e6, **_Finite)]  # scales a sum: tiny is just tiny
Name = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class CallFile(_Model):
    to: Name
    per_request: PerRequest
    request_kb: Kb
    response_kb: Kb


class EndpointFile(_Model):
    service_ms: Ms
    calls: list[CallFile] | None = None


class ServiceFile(_Model):
    replicas: dict[str, Annotated[int, Field(ge=0, le=MAX_REPLICAS)]] | None = None
    endpoints: dict[str, EndpointFile]


class ObjectiveFile(_Model):
    cost_weight_ms_per_usd_hour: CostWeight = 0.0
    max_utilization: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), _NotTiny] = 0.9


class IngressFile(_Model):
    endpoint: Name
    rps: dict[str, Rps]
    request_kb: Kb
    response_kb: Kb


class ScenarioFile(_Model):
    name: str = ""
    clusters: Annotated[list[Name], Field(min_length=1)]
    rtt_ms: dict[str, dict[str, Ms]] = Field(default_factory=dict)
    egress_usd_per_gb: dict[str, UsdPerGb | dict[str, UsdPerGb]] = Field(default_factory=dict)
    objective: ObjectiveFile = ObjectiveFile()
    services: Annotated[dict[str, ServiceFile], Field(min_length=1)]
    ingress: Annotated[list[IngressFile], Field(min_length=1)]


def _check_cluster(name: str, clusters: list[str], path: str) -> None:
    if name not in clusters:
        raise InputError(path, f"unknown cluster {quote(name)} (clusters: {', '.join(clusters)})")


def _topology(f: ScenarioFile) -> Topology:
    clusters = f.clusters
    seen: set[str] = set()
    for i, c in enumerate(clusters):
        if c in seen:
            raise InputError(f"clusters[{i}]", f"duplicate cluster {quote(c)}")
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
        if sname == INGRESS:
            raise InputError(
                f"services.{sname}",
                f"the name {INGRESS!r} is reserved for the ingress gateways (rename the service)",
            )
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
                    raise InputError(
                        path, f"unknown endpoint {quote(call.to)} (want service.endpoint)"
                    )
                if not deployed(call.to):
                    raise InputError(
                        path,
                        f"{quote(call.to)} belongs to service "
                        f"{quote(split_endpoint_id(call.to)[0])}, "
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
                f"{path}.endpoint",
                f"unknown endpoint {quote(ing.endpoint)} (want service.endpoint)",
            )
        if not app.service_of(ing.endpoint).replicas:
            raise InputError(
                f"{path}.endpoint",
                f"service {quote(split_endpoint_id(ing.endpoint)[0])} has no replicas in any "
                "cluster",
            )
        for c in ing.rps:
            _check_cluster(c, f.clusters, f"{path}.rps.{c}")
        out.append(IngressDemand(ing.endpoint, dict(ing.rps), ing.request_kb, ing.response_kb))
    if sum(d.total_rps for d in out) <= 0:
        raise InputError("ingress", "the total ingress rate is zero")
    return tuple(out)


def _extras(
    model: BaseModel, path: list[str | int]
) -> Iterator[tuple[list[str | int], str, list[str]]]:
    """(path, unknown key, known keys) for every key of the file the schema does not define."""
    known = list(type(model).model_fields)
    for key in model.model_extra or {}:
        yield path, key, known
    for name in known:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _extras(value, [*path, name])
        elif isinstance(value, list | dict):
            items = enumerate(value) if isinstance(value, list) else value.items()
            for k, v in items:
                if isinstance(v, BaseModel):
                    yield from _extras(v, [*path, name, k])


def unknown_keys(f: ScenarioFile) -> list[InputError]:
    """One InputError per key the format does not define, naming the nearest known key."""
    return [unknown_key(join_path(path), key, known) for path, key, known in _extras(f, [])]


def scenario_from_dict(
    data: Any, *, strict: bool = False, warn: Callable[[InputError], None] | None = None
) -> Scenario:
    """Validate a parsed scenario document and build the Scenario.

    Unknown keys are passed to `warn` (or raise the first as InputError with `strict`).
    """
    if not isinstance(data, dict):
        raise InputError("", "a scenario must be a YAML mapping (see scenario-format.md)")
    try:
        f = ScenarioFile.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e, data) from None
    extra = unknown_keys(f)
    report_unknown(extra, strict, warn)
    topology = _topology(f)
    app = _app(f)
    ingress = _ingress(f, app)
    objective = Objective(
        cost_weight_ms_per_usd_hour=f.objective.cost_weight_ms_per_usd_hour,
        max_utilization=f.objective.max_utilization,
    )
    assert all(math.isfinite(x) for row in topology.rtt_ms for x in row)
    return Scenario(f.name, topology, app, ingress, objective)


def load_scenario(
    path: str | Path, *, strict: bool = False, warn: Callable[[InputError], None] | None = None
) -> Scenario:
    """Read and validate a scenario file; raise InputError naming the file and the bad field.

    Unknown keys go to `warn` with the file named (errors with `strict`).
    """
    warn_file = warn_with_source(path, warn)
    return load_document(
        path,
        "scenario",
        "yaml",
        lambda data: scenario_from_dict(data, strict=strict, warn=warn_file),
    )
