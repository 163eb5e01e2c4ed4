"""Clusters (= Envoy locality regions), the RTT between them and the price of bytes between them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Topology:
    clusters: tuple[str, ...]
    rtt_ms: tuple[tuple[float, ...], ...]
    """Full symmetric matrix, indexed like `clusters`; zero on the diagonal."""
    egress_usd_per_gb: tuple[tuple[float, ...], ...]
    """Price of bytes leaving row cluster towards column cluster; zero on the diagonal."""

    def __post_init__(self) -> None:
        n = len(self.clusters)
        if len(self.rtt_ms) != n or len(self.egress_usd_per_gb) != n:
            raise ValueError("topology matrices must be square over the clusters")

    def index(self, cluster: str) -> int:
        return self.clusters.index(cluster)

    def rtt(self, a: str, b: str) -> float:
        return self.rtt_ms[self.index(a)][self.index(b)]

    def egress_price(self, a: str, b: str) -> float:
        return self.egress_usd_per_gb[self.index(a)][self.index(b)]

    def rtt_matrix(self) -> npt.NDArray[np.float64]:
        return np.array(self.rtt_ms, dtype=float)

    def egress_matrix(self) -> npt.NDArray[np.float64]:
        return np.array(self.egress_usd_per_gb, dtype=float)

    def by_distance(self, src: str, candidates: tuple[str, ...] | list[str]) -> list[str]:
        """Candidates nearest first (by RTT from `src`; ties keep the declared cluster order)."""
        i = self.index(src)
        return sorted(candidates, key=lambda c: (self.rtt_ms[i][self.index(c)], self.index(c)))
