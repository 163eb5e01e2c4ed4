"""Two policies that route the same service in the same namespace: the older one wins.

"Older" is the earlier `metadata.creationTimestamp`; ties (same second) go to the name that sorts
first, so every replica and every restart decides the same way.
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
        return (self.created, self.name) < (other.created, other.name)


def conflict_with(claim: Claim, others: Iterable[Claim]) -> tuple[Claim, str] | None:
    """The oldest other policy in the same namespace that routes a service `claim` also routes and
    is older than `claim` (with that service), or None when `claim` wins all its services."""
    best: tuple[Claim, str] | None = None
    for o in others:
        if o.key == claim.key or o.namespace != claim.namespace or not o.older_than(claim):
            continue
        shared = sorted(claim.services & o.services)
        if shared and (best is None or o.older_than(best[0])):
            best = (o, shared[0])
    return best


def conflict_message(winner: Claim, service: str) -> str:
    return (
        f"service {service!r} is already routed by the older policy {winner.key}; "
        "this policy is not acted on until that one no longer routes it"
    )
