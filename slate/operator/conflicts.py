"""Two policies that route the same service name: the older one wins.

In the same namespace that is the contract (trafficpolicy.md). Across namespaces too: the xDS
resources slate serves are named by service name alone (a plain Envoy's cluster, the EDS name an
EnvoyFilter points at slate), so `cart` in `shop` and `cart` in `shop-b` would be one name at the
proxies; rather than serve one namespace's endpoints and weights for both, the newer policy is
refused with `Conflict` naming the other (docs/operator.md, "Conflicts").

"Older" is the earlier `metadata.creationTimestamp`; ties (same second) go to the namespace, then
the name, that sorts first, so every replica and every restart decides the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """What one policy routes: its namespace, name, age and services."""

    namespace: str
    name: str
    created: str
    """metadata.creationTimestamp (RFC 3339, so strings order by time)."""
    services: frozenset[str]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def older_than(self, other: Claim) -> bool:
        return (self.created, self.namespace, self.name) < (
            other.created,
            other.namespace,
            other.name,
        )


def conflict_with(claim: Claim, others: Iterable[Claim]) -> tuple[Claim, str] | None:
    """The oldest other policy (any namespace) that routes a service name `claim` also routes and
    is older than `claim` (with that service), or None when `claim` wins all its services."""
    best: tuple[Claim, str] | None = None
    for o in others:
        if o.key == claim.key or not o.older_than(claim):
            continue
        shared = sorted(claim.services & o.services)
        if shared and (best is None or o.older_than(best[0])):
            best = (o, shared[0])
    return best


def conflict_message(winner: Claim, service: str, namespace: str | None = None) -> str:
    """Why the newer policy is not acted on (`namespace`: the newer policy's own)."""
    why = ""
    if namespace is not None and winner.namespace != namespace:
        why = " (slate's xDS names a service without its namespace: one policy per service name)"
    return (
        f"service {service!r} is already routed by the older policy {winner.key}{why}; "
        "this policy is not acted on until that one no longer routes it"
    )
