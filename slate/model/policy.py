"""TrafficPolicy (slate.dev/v1alpha1): the resource users apply, as an immutable value.

The contract is /work/shared/trafficpolicy.md (copied to docs/operator.md): every field name and
meaning there is kept. Parsing is two passes, like scenario files, so that a problem is reported
against the field the user wrote (`spec.clusters[1].name`):

1. shape: a pydantic schema of the manifest (types, required fields, ranges, enums, patterns, list
   sizes). These are the rules the CRD's structural schema (crds/trafficpolicy.yaml) also
   expresses; a test checks that both give the same verdict.
2. meaning: durations and their minimums, then `cross_field_problems`, the rules a schema cannot
   express (names referring to clusters, duplicate names, overlapping endpoint classes). The
   operator's validating webhook runs the same function, and the operator re-checks with it when
   no webhook is installed.

Fields the contract does not define are ignored (extra optional fields are allowed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slate.model.errors import InputError, from_validation_error, join_path
from slate.model.files import load_document

API_GROUP = "slate.dev"
API_VERSION = "v1alpha1"
KIND = "TrafficPolicy"
PLURAL = "trafficpolicies"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""DNS-1123 label (with max length 63): cluster, service and endpoint class names."""
REGION = r"^[a-z0-9-]+$"
DURATION = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"
"""`30s`, `2m`, `1h`, `1m30s`: whole hours, minutes, seconds in that order (minLength 2)."""
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
"""A Prometheus label name."""
URL = r"^https?://[^\s]+$"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OUTPUTS = ("xds", "destinationRule", "dryRun")

MAX_CLUSTERS = 64
MAX_SERVICES = 500
MAX_ENDPOINTS = 64
"""Endpoint classes per service (a bound the contract leaves open; generous for real APIs)."""
MAX_PAIRS = MAX_CLUSTERS * (MAX_CLUSTERS - 1)
"""network.rtt and network.egress.prices entries: one per ordered pair of distinct clusters."""
MAX_PATH_PREFIX = 1024
MAX_URL = 2048
MIN_INTERVAL_S = 5.0
MIN_WINDOW_S = 30.0

Output = Literal["xds", "destinationRule", "dryRun"]


# --- the value -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyCluster:
    name: str
    region: str


@dataclass(frozen=True)
class EndpointMatch:
    method: str | None
    path_prefix: str | None

    def overlaps(self, other: EndpointMatch) -> bool:
        """True if some request matches both (absent = any method / any path)."""
        methods = self.method is None or other.method is None or self.method == other.method
        a, b = self.path_prefix or "/", other.path_prefix or "/"
        return methods and (a.startswith(b) or b.startswith(a))

    def __str__(self) -> str:
        return f"{self.method or '*'} {self.path_prefix or '/'}"


@dataclass(frozen=True)
class PolicyEndpoint:
    name: str
    match: EndpointMatch


@dataclass(frozen=True)
class PolicyService:
    name: str
    port: int
    endpoints: tuple[PolicyEndpoint, ...] = ()


def _frozen(m: Mapping[tuple[str, str], float]) -> Mapping[tuple[str, str], float]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class TrafficPolicy:
    name: str
    namespace: str
    clusters: tuple[PolicyCluster, ...]
    services: tuple[PolicyService, ...]
    rtt_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """network.rtt as given, keyed (from, to); RTT is symmetric, so use `rtt()` to look up."""
    egress_default_usd_per_gb: float = 0.02
    egress_usd_per_gb: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """network.egress.prices, keyed (from, to): bytes leaving `from` towards `to`."""
    cost_weight_ms_per_usd_hour: float = 0.0
    max_utilization: float = 0.9
    interval_s: float = 30.0
    max_shift_per_interval: float = 0.1
    min_local_share: float = 0.0
    prometheus_url: str | None = None
    """None: the operator's --prometheus flag."""
    window_s: float = 120.0
    endpoint_label: str = "slate_endpoint"
    output: Output = "xds"
    paused: bool = False
    generation: int | None = None
    """metadata.generation of the manifest (None when read from a file without one)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rtt_ms", _frozen(self.rtt_ms))
        object.__setattr__(self, "egress_usd_per_gb", _frozen(self.egress_usd_per_gb))

    @property
    def key(self) -> str:
        """`namespace/name`: how logs, metrics and conflicts name the policy."""
        return f"{self.namespace}/{self.name}"

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)

    def service(self, name: str) -> PolicyService | None:
        return next((s for s in self.services if s.name == name), None)

    def endpoint_ids(self) -> list[str]:
        """`svc.ep` per endpoint class, bare `svc` for a service that lists no classes."""
        out: list[str] = []
        for s in self.services:
            if s.endpoints:
                out.extend(f"{s.name}.{e.name}" for e in s.endpoints)
            else:
                out.append(s.name)
        return out

    def rtt(self, a: str, b: str) -> float | None:
        """Policy RTT between two clusters in ms (0 within one; None: measure it)."""
        if a == b:
            return 0.0
        got = self.rtt_ms.get((a, b))
        return got if got is not None else self.rtt_ms.get((b, a))

    def egress_price(self, a: str, b: str) -> float:
        """USD per GB for bytes leaving cluster `a` towards `b` (0 within one cluster)."""
        if a == b:
            return 0.0
        return self.egress_usd_per_gb.get((a, b), self.egress_default_usd_per_gb)


# --- pass 1: shape (mirrors the CRD's structural schema) -------------------------------------

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Duration = Annotated[str, Field(min_length=2, max_length=24, pattern=DURATION)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=False)


class _Cluster(_Model):
    name: DnsLabel
    region: Annotated[str, Field(min_length=1, max_length=63, pattern=REGION)] | None = None


class _Match(_Model):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] | None = None
    path_prefix: (
        Annotated[str, Field(min_length=1, max_length=MAX_PATH_PREFIX, pattern=r"^/")] | None
    ) = Field(default=None, alias="pathPrefix")


class _Endpoint(_Model):
    name: DnsLabel
    match: _Match


class _Service(_Model):
    name: DnsLabel
    port: Annotated[int, Field(ge=1, le=65535)]
    endpoints: Annotated[list[_Endpoint], Field(min_length=1, max_length=MAX_ENDPOINTS)] | None = (
        None
    )


class _Rtt(_Model):
    from_: DnsLabel = Field(alias="from")
    to: DnsLabel
    ms: NonNeg


class _Price(_Model):
    from_: DnsLabel = Field(alias="from")
    to: DnsLabel
    usd_per_gb: NonNeg = Field(alias="usdPerGb")


class _Egress(_Model):
    default_usd_per_gb: NonNeg = Field(default=0.02, alias="defaultUsdPerGb")
    prices: Annotated[list[_Price], Field(max_length=MAX_PAIRS)] | None = None


class _Network(_Model):
    rtt: Annotated[list[_Rtt], Field(max_length=MAX_PAIRS)] | None = None
    egress: _Egress | None = None


class _Objective(_Model):
    cost_weight_ms_per_usd_hour: NonNeg = Field(default=0.0, alias="costWeightMsPerUsdHour")
    max_utilization: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.9, alias="maxUtilization"
    )


class _Rollout(_Model):
    interval: Duration = "30s"
    max_shift_per_interval: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.1, alias="maxShiftPerInterval"
    )
    min_local_share: Annotated[float, Field(ge=0, le=1)] = Field(default=0.0, alias="minLocalShare")


class _Telemetry(_Model):
    prometheus_url: Annotated[str, Field(max_length=MAX_URL, pattern=URL)] | None = Field(
        default=None, alias="prometheusUrl"
    )
    window: Duration = "2m"
    endpoint_label: Annotated[str, Field(min_length=1, max_length=128, pattern=LABEL_NAME)] = Field(
        default="slate_endpoint", alias="endpointLabel"
    )


class _Spec(_Model):
    clusters: Annotated[list[_Cluster], Field(min_length=1, max_length=MAX_CLUSTERS)]
    services: Annotated[list[_Service], Field(min_length=1, max_length=MAX_SERVICES)]
    network: _Network | None = None
    objective: _Objective | None = None
    rollout: _Rollout | None = None
    telemetry: _Telemetry | None = None
    output: Literal["xds", "destinationRule", "dryRun"] = "xds"
    paused: bool = False


class _Metadata(_Model):
    name: DnsLabel | Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = "default"
    generation: int | None = None


class _Manifest(_Model):
    api_version: Literal["slate.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TrafficPolicy"]
    metadata: _Metadata
    spec: _Spec


_EXTRA_MESSAGES = {
    "string_pattern_mismatch": "must be {pattern}",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "literal_error": "must be one of {expected}",
    "too_long": "must have at most {max_length} item(s)",
    "bool_type": "must be true or false",
    "model_type": "must be a mapping",
}
_PATTERN_NAMES = {
    DNS_LABEL: "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a "
    "letter or digit)",
    REGION: "made of lowercase letters, digits and '-'",
    DURATION: "a duration like 30s, 2m, 1h or 1m30s",
    LABEL_NAME: "a Prometheus label name",
    URL: "an http:// or https:// URL",
    "^/": "a path starting with '/'",
}


def _schema_error(err: ValidationError, data: Any) -> InputError:
    """The first problem, worded for users: patterns by what they mean, enums by their values."""
    base = from_validation_error(err, data)
    first = err.errors(include_url=False)[0]
    template = _EXTRA_MESSAGES.get(first["type"])
    if template is None:
        return base
    ctx = dict(first.get("ctx", {}))
    if "pattern" in ctx:
        ctx["pattern"] = _PATTERN_NAMES.get(str(ctx["pattern"]), repr(ctx["pattern"]))
    reason = template.format(**ctx)
    if first["type"] not in ("model_type",):
        reason += f" (got {_short(first['input'])})"
    more = re.search(r" \(and \d+ more problems?\)$", base.reason)
    if more:
        reason += more.group(0)
    return InputError(base.path, reason)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- pass 2: meaning ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"([0-9]+)([hms])")


def parse_duration(text: str) -> float:
    """`"1m30s"` -> 90.0 seconds. Raises ValueError unless `text` matches `DURATION`."""
    if len(text) < 2 or not re.fullmatch(DURATION, text):
        raise ValueError(f"not a duration like 30s, 2m, 1h or 1m30s: {text!r}")
    scale = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * scale[u] for n, u in _DURATION_PART.findall(text)))


def format_duration(seconds: float) -> str:
    """90 -> `1m30s` (whole seconds)."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return out or "0s"


def _duration(text: str, path: str, minimum: float) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise InputError(path, str(e)) from None
    if seconds < minimum:
        raise InputError(path, f"must be at least {format_duration(minimum)} (got {text!r})")
    return seconds


def _items(obj: Any, key: str) -> list[tuple[int, Mapping[str, Any]]]:
    """The mapping items of list `obj[key]` with their indices (malformed parts are skipped)."""
    if not isinstance(obj, Mapping):
        return []
    raw = obj.get(key)
    if not isinstance(raw, list):
        return []
    return [(i, x) for i, x in enumerate(raw) if isinstance(x, Mapping)]


def _match_of(raw: Any) -> EndpointMatch | None:
    if not isinstance(raw, Mapping):
        return None
    method, prefix = raw.get("method"), raw.get("pathPrefix")
    return EndpointMatch(
        method if isinstance(method, str) else None, prefix if isinstance(prefix, str) else None
    )


def cross_field_problems(spec: Mapping[str, Any]) -> list[InputError]:
    """Every rule of trafficpolicy.md that a structural schema cannot express, checked on a raw
    `spec` mapping (paths start with `spec.`). The webhook and the operator both use this.

    - names unique: clusters, services, endpoint classes within a service; rtt and price pairs
      (a pair given in both directions counts once: RTT is symmetric);
    - `network.rtt` and `network.egress.prices` entries name clusters in `spec.clusters`, and two
      different ones;
    - an endpoint class declares at least one of `method`, `pathPrefix`, and no two classes of one
      service match the same requests (same or absent method, one prefix a prefix of the other);
    - `rollout.interval` >= 5s and `telemetry.window` >= 30s.
    """
    problems: list[InputError] = []

    def bad(parts: list[str | int], reason: str) -> None:
        problems.append(InputError(join_path(["spec", *parts]), reason))

    def unique(
        key: str, items: list[tuple[int, Mapping[str, Any]]], where: list[str | int]
    ) -> None:
        seen: dict[Any, int] = {}
        for i, item in items:
            name = item.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                bad(
                    [*where, i, "name"],
                    f"duplicate {key} name {_short(name)} (also at index {seen[name]})",
                )
            else:
                seen[name] = i

    clusters = _items(spec, "clusters")
    unique("cluster", clusters, ["clusters"])
    known = [c["name"] for _, c in clusters if isinstance(c.get("name"), str)]
    known_text = ", ".join(_short(k, 70) for k in known[:8]) + (
        f", ... ({len(known)} clusters)" if len(known) > 8 else ""
    )

    services = _items(spec, "services")
    unique("service", services, ["services"])
    for si, svc in services:
        eps = _items(svc, "endpoints")
        unique("endpoint", eps, ["services", si, "endpoints"])
        matches: list[tuple[int, str, EndpointMatch]] = []
        for ei, ep in eps:
            m = _match_of(ep.get("match"))
            if m is None:
                continue
            if m.method is None and m.path_prefix is None:
                bad(
                    ["services", si, "endpoints", ei, "match"],
                    "needs method or pathPrefix (or both)",
                )
                continue
            for ej, other_name, other in matches:
                if m.overlaps(other):
                    bad(
                        ["services", si, "endpoints", ei, "match"],
                        f"matches the same requests as endpoints[{ej}] ({other_name!r}): "
                        f"{m} vs {other}; endpoint classes of a service must not overlap",
                    )
                    break
            matches.append((ei, str(ep.get("name")), m))

    network = spec.get("network")
    network = network if isinstance(network, Mapping) else {}
    egress = network.get("egress")
    for where, items, what in (
        (["network", "rtt"], _items(network, "rtt"), "RTT"),
        (["network", "egress", "prices"], _items(egress, "prices"), "price"),
    ):
        pairs: dict[frozenset[str] | tuple[str, str], int] = {}
        for i, entry in items:
            ends = []
            for end in ("from", "to"):
                name = entry.get(end)
                if not isinstance(name, str):
                    continue
                ends.append(name)
                if name not in known:
                    bad(
                        [*where, i, end], f"unknown cluster {_short(name)} (clusters: {known_text})"
                    )
            if len(ends) != 2:
                continue
            if ends[0] == ends[1]:
                bad([*where, i, "to"], f"names the same cluster as from ({ends[0]!r})")
                continue
            # RTT is symmetric: a->b and b->a are one pair; prices are directional.
            pair: frozenset[str] | tuple[str, str] = (
                frozenset(ends) if what == "RTT" else (ends[0], ends[1])
            )
            if pair in pairs:
                bad(
                    [*where, i],
                    f"duplicate {what} for {ends[0]} -> {ends[1]} (also at index {pairs[pair]})",
                )
            else:
                pairs[pair] = i

    for section, key, minimum in (
        ("rollout", "interval", MIN_INTERVAL_S),
        ("telemetry", "window", MIN_WINDOW_S),
    ):
        part = spec.get(section)
        value = part.get(key) if isinstance(part, Mapping) else None
        if isinstance(value, str):
            try:
                _duration(value, "", minimum)
            except InputError as e:
                bad([section, key], e.reason)
    return problems


def policy_from_manifest(doc: Any) -> TrafficPolicy:
    """A whole TrafficPolicy manifest (apiVersion, kind, metadata, spec) -> TrafficPolicy.

    Raises InputError naming the first bad field (`spec.clusters[1].name`).
    """
    if not isinstance(doc, Mapping):
        raise InputError("", "a TrafficPolicy must be a mapping (apiVersion, kind, metadata, spec)")
    data = dict(doc)
    try:
        m = _Manifest.model_validate(data)
    except ValidationError as e:
        raise _schema_error(e, data) from None
    problems = cross_field_problems(data["spec"])
    if problems:
        first = problems[0]
        more = len(problems) - 1
        if more:
            suffix = f" (and {more} more problem{'s' if more > 1 else ''})"
            raise InputError(first.path, first.reason + suffix)
        raise first
    spec = m.spec
    network = spec.network or _Network()
    egress = network.egress or _Egress()
    objective = spec.objective or _Objective()
    rollout = spec.rollout or _Rollout()
    telemetry = spec.telemetry or _Telemetry()
    return TrafficPolicy(
        name=m.metadata.name,
        namespace=m.metadata.namespace,
        clusters=tuple(PolicyCluster(c.name, c.region or c.name) for c in spec.clusters),
        services=tuple(
            PolicyService(
                s.name,
                s.port,
                tuple(
                    PolicyEndpoint(e.name, EndpointMatch(e.match.method, e.match.path_prefix))
                    for e in s.endpoints or []
                ),
            )
            for s in spec.services
        ),
        rtt_ms={(r.from_, r.to): r.ms for r in network.rtt or []},
        egress_default_usd_per_gb=egress.default_usd_per_gb,
        egress_usd_per_gb={(p.from_, p.to): p.usd_per_gb for p in egress.prices or []},
        cost_weight_ms_per_usd_hour=objective.cost_weight_ms_per_usd_hour,
        max_utilization=objective.max_utilization,
        interval_s=parse_duration(rollout.interval),
        max_shift_per_interval=rollout.max_shift_per_interval,
        min_local_share=rollout.min_local_share,
        prometheus_url=telemetry.prometheus_url,
        window_s=parse_duration(telemetry.window),
        endpoint_label=telemetry.endpoint_label,
        output=spec.output,
        paused=spec.paused,
        generation=m.metadata.generation,
    )


def load_policy(path: str | Path) -> TrafficPolicy:
    """Read a TrafficPolicy manifest file (YAML); InputError names the file and the field."""
    return load_document(path, "TrafficPolicy", "yaml", policy_from_manifest)
