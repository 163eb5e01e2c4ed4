"""External demand: requests arriving at each cluster's ingress gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class IngressDemand:
    endpoint: str  # entry endpoint id
    rps: Mapping[str, float]  # ingress cluster -> requests per second
    request_kb: float
    response_kb: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rps", MappingProxyType(dict(self.rps)))

    @property
    def total_rps(self) -> float:
        return sum(self.rps.values())
