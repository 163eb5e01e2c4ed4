"""Routing: the weights one proxy enforces, and the route-file contract.

A route is keyed by what one proxy can enforce: (source service, source cluster, destination),
where the destination is an endpoint `service.endpoint` or a whole service (`service`, applying to
all of its endpoints). Its weights say how that proxy splits the calls over the clusters hosting the
destination.
The JSON form is the output of `slate solve --format json` (see scenario-format.md):

    {"routes": [{"from_service", "from_cluster", "to", "weights": {cluster: w}}],
     "predicted": {"mean_latency_ms", "egress_usd_per_hour", "max_utilization"}}

Weights are non-negative; readers normalise them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from slate.model.errors import (
    Bounds,
    InputError,
    bounded_number,
    finite_number,
    quote,
    report_unknown,
    require,
    unknown_key,
)
from slate.model.files import load_document, warn_with_source
from slate.model.keys import INGRESS, RouteKey

__all__ = ["INGRESS", "Prediction", "Route", "RouteKey", "Routing", "load_routing"]


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Route:
    from_service: str
    from_cluster: str
    to: str
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _frozen(self.weights))

    @property
    def key(self) -> RouteKey:
        return RouteKey(self.from_service, self.from_cluster, self.to)

    def normalized(self) -> dict[str, float]:
        """Weights scaled to sum to 1 (empty if they sum to 0)."""
        total = sum(self.weights.values())
        if total <= 0:
            return {}
        return {c: w / total for c, w in self.weights.items() if w > 0}

    def to_json(self) -> dict[str, Any]:
        return {
            "from_service": self.from_service,
            "from_cluster": self.from_cluster,
            "to": self.to,
            "weights": {c: round(w, 6) for c, w in self.weights.items()},
        }


@dataclass(frozen=True)
class Prediction:
    mean_latency_ms: float  # math.inf when a station is overloaded
    egress_usd_per_hour: float
    max_utilization: float

    def to_json(self) -> dict[str, Any]:
        def num(x: float, nd: int) -> float | None:
            return None if math.isinf(x) or math.isnan(x) else round(x, nd)

        return {
            "mean_latency_ms": num(self.mean_latency_ms, 3),
            "egress_usd_per_hour": num(self.egress_usd_per_hour, 4),
            "max_utilization": num(self.max_utilization, 4),
        }


@dataclass(frozen=True)
class Routing:
    routes: tuple[Route, ...]
    predicted: Prediction | None = None
    _index: Mapping[tuple[str, str, str], Route] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str, str, str], Route] = {}
        for r in self.routes:
            index[r.key] = r
        object.__setattr__(self, "_index", MappingProxyType(index))

    def get(self, from_service: str, from_cluster: str, to: str) -> Route | None:
        """The route for a destination endpoint `service.endpoint`, falling back to the service."""
        route = self._index.get((from_service, from_cluster, to))
        if route is None and "." in to:
            route = self._index.get((from_service, from_cluster, to.split(".", 1)[0]))
        return route

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"routes": [r.to_json() for r in self.routes]}
        if self.predicted is not None:
            out["predicted"] = self.predicted.to_json()
        return out

    def dumps(self) -> str:
        """JSON with one route per line: valid for any JSON reader, and diffable by people."""
        data = self.to_json()
        lines = ['{"routes": [']
        routes = [json.dumps(r) for r in data["routes"]]
        lines += [f"  {r}," for r in routes[:-1]] + [f"  {r}" for r in routes[-1:]]
        tail = f',\n "predicted": {json.dumps(data["predicted"])}' if "predicted" in data else ""
        lines.append(f" ]{tail}}}")
        return "\n".join(lines)


WEIGHT_BOUNDS = Bounds(hi=1e6, tiny=1e-9)
"""Route weights: 0, or 1e-9 to 1e6 (readers normalise; 1e-9 is far below the printed 1e-6)."""
_ROUTE_FILE_KEYS = ("routes", "predicted")
_ROUTE_KEYS = ("from_service", "from_cluster", "to", "weights")
_PREDICTED_KEYS = ("mean_latency_ms", "egress_usd_per_hour", "max_utilization")


def _unknown(obj: Mapping[str, Any], known: tuple[str, ...], path: str) -> list[InputError]:
    return [unknown_key(path, key, known) for key in obj if key not in known]


def routing_from_json(
    data: Any, *, strict: bool = False, warn: Callable[[InputError], None] | None = None
) -> Routing:
    """Parse the route-file contract; raise InputError naming the bad field.

    Keys the contract does not define go to `warn` (with `strict`, the first is an InputError).
    """
    if not isinstance(data, dict):
        raise InputError("", "a route file must be a JSON object with a 'routes' list")
    extra = _unknown(data, _ROUTE_FILE_KEYS, "")
    routes_raw = data.get("routes")
    if not isinstance(routes_raw, list):
        raise InputError("routes", "is required and must be a list")
    routes: list[Route] = []
    seen: set[tuple[str, str, str]] = set()
    for i, raw in enumerate(routes_raw):
        path = f"routes[{i}]"
        if not isinstance(raw, dict):
            raise InputError(path, f"must be an object (got {quote(raw)})")
        extra += _unknown(raw, _ROUTE_KEYS, path)
        frm = require(raw, "from_service", path, str)
        cluster = require(raw, "from_cluster", path, str)
        to = require(raw, "to", path, str)
        weights_raw = require(raw, "weights", path, dict)
        weights: dict[str, float] = {}
        for c, w in weights_raw.items():
            weights[str(c)] = bounded_number(w, f"{path}.weights.{c}", WEIGHT_BOUNDS)
        if weights and sum(weights.values()) <= 0:
            raise InputError(f"{path}.weights", "must not all be zero")
        key = (frm, cluster, to)
        if key in seen:
            raise InputError(
                path, f"duplicates the route for {quote(frm)}@{quote(cluster)} -> {quote(to)}"
            )
        seen.add(key)
        routes.append(Route(frm, cluster, to, weights))
    predicted = None
    pred = data.get("predicted")
    if isinstance(pred, dict):
        extra += _unknown(pred, _PREDICTED_KEYS, "predicted")
        vals = []
        for k in _PREDICTED_KEYS:
            v = pred.get(k)
            vals.append(math.inf if v is None else finite_number(v, f"predicted.{k}"))
        predicted = Prediction(*vals)
    elif pred is not None:
        raise InputError("predicted", f"must be an object (got {quote(pred)})")
    report_unknown(extra, strict, warn)
    return Routing(tuple(routes), predicted)


def load_routing(
    path: str | Path, *, strict: bool = False, warn: Callable[[InputError], None] | None = None
) -> Routing:
    """Read a route file (`slate solve --format json` output); unknown keys: routing_from_json."""
    warn_file = warn_with_source(path, warn)
    return load_document(
        path,
        "route file",
        "json",
        lambda data: routing_from_json(data, strict=strict, warn=warn_file),
    )


def routing_from_routes(routes: Iterable[Route], predicted: Prediction | None = None) -> Routing:
    return Routing(tuple(routes), predicted)
