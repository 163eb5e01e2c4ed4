"""Route keys, and the one rule that turns a key's route into a split over clusters.

A key is what one proxy can enforce: (source service, source cluster, destination endpoint).
Ingress gateways are the source service `ingress`. The rule (scenario-format.md, "Routing and its
output"): a route's weights are normalised over the clusters that can take the calls (the
destination is deployed there and the weight is > 0); a key with no route, or whose route names
no such cluster, goes to the nearest cluster by RTT where the destination is deployed: its own
cluster if it is one, else the clusters at the smallest RTT, split equally among them when several
are equally near (what a proxy does with equal locality weights, so the model predicts what is
served). The evaluator, the baselines, the optimizer and the xDS views all apply it through
`split_or_nearest`, with RTTs from the scenario's topology or from ENDPOINTS.yaml (where an
unknown RTT is None: with none known, every hosting cluster gets an equal share).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from slate.model.scenario import Scenario

INGRESS = "ingress"
"""The source service name of ingress gateways."""


class RouteKey(NamedTuple):
    """A route's key. A tuple, so it equals and hashes like (from_service, from_cluster, to)."""

    from_service: str
    from_cluster: str
    to: str  # destination endpoint id `service.endpoint` (or a whole service, in route files)


Split = tuple[tuple[str, float], ...]
"""(destination cluster, share) pairs, shares summing to 1."""


class Distances(Protocol):
    """Where RTTs come from: the scenario's Topology, or the xDS endpoints' optional table."""

    def rtt(self, a: str, b: str) -> float | None: ...


def split_or_nearest(
    distances: Distances,
    from_cluster: str,
    deployed: Sequence[str],
    weights: Mapping[str, float] | None,
) -> Split:
    """The split of one key's calls: `weights` normalised over the usable clusters (in `deployed`,
    weight > 0), else `nearest_split`."""
    if weights:
        usable = {c: w for c, w in weights.items() if w > 0 and c in deployed}
        total = sum(usable.values())
        if total > 0:
            return tuple((c, w / total) for c, w in usable.items())
    return nearest_split(distances, from_cluster, deployed)


def nearest_split(distances: Distances, from_cluster: str, deployed: Sequence[str]) -> Split:
    """Everything to the deployed cluster nearest `from_cluster`: itself if deployed there, else
    the clusters at the smallest known RTT, equally (in `deployed`'s order); all of `deployed`
    equally when no RTT to them is known."""
    if not deployed:
        raise ValueError("no candidate cluster")
    if from_cluster in deployed:
        return ((from_cluster, 1.0),)
    known = [(r, c) for c in deployed if (r := distances.rtt(from_cluster, c)) is not None]
    if known:
        best = min(r for r, _c in known)
        near = [c for r, c in known if r == best]
    else:
        near = list(deployed)
    return tuple((c, 1.0 / len(near)) for c in near)


def route_keys(scenario: Scenario) -> list[RouteKey]:
    """Every key that can carry traffic under some routing, in a deterministic order, so all
    policies print routes for the same keys."""
    keys: dict[RouteKey, None] = {}
    for d in scenario.ingress:
        for c in d.rps:
            keys[RouteKey(INGRESS, c, d.endpoint)] = None
    app = scenario.app
    for svc in app.services:
        callees = {call.to: None for e in svc.endpoints for call in e.calls}
        for c in svc.clusters:
            for dst in callees:
                keys[RouteKey(svc.name, c, dst)] = None
    return list(keys)
