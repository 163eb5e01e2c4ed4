"""Latency models: how a station's latency grows with its load.

A *station* is one service in one cluster. Its load is its work rate `w` in milliseconds of service
per second (`sum over endpoints of rps_e * service_ms_e`). Every request pays its endpoint's own
service time (linear in the loads, handled by the optimizer and the evaluator); a station model adds
the queueing part: `queue_cost(w)` request-milliseconds per second spent waiting, convex and
increasing in `w`, with its slope, and the `capacity` at which the station saturates.

That is all the optimizer needs (it builds a tangent-line epigraph of `queue_cost`), so curves
fitted from telemetry plug in beside M/M/c without touching the formulation.

A station model is a *value*: immutable, hashable and compared by value (a frozen dataclass of
numbers and tuples does it). The optimizer keys shared tangents by it, and the control loop saves,
restores and compares fitted curves by it; two equal models must give the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StationModel(Protocol):
    """A station's queueing curve; a frozen, hashable value compared by value (see above).

    `capacity` is the only notion of size anyone may use (the baselines, the capacity check, the
    LP's caps and the evaluator's utilization all ask it): never `1000 * replicas`.
    """

    def __hash__(self) -> int: ...

    def __eq__(self, other: object) -> bool: ...

    @property
    def capacity(self) -> float:
        """Work rate (ms of service per second) at which utilization reaches 1."""
        ...

    def queue_cost(self, work: float) -> float:
        """Request-ms per second spent queueing at work rate `work` (inf at or past capacity)."""
        ...

    def queue_slope(self, work: float) -> float:
        """d queue_cost / d work, for `work < capacity`."""
        ...


class LatencyModel(Protocol):
    """Gives the station model of a service in a cluster."""

    def station(self, service: str, cluster: str) -> StationModel: ...


EXACT_UP_TO = 64
"""Erlang C by the exact recursion up to this many replicas (at most ~10 us), by the closed form
above (~3 us whatever the count)."""

MAX_REPLICAS = 10**9
"""The most replicas a station model takes (inputs beyond are refused, not approximated): far above
any real deployment, and where the closed form was checked (see `erlang_c`)."""


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load `a` erlangs (a < c)."""
    return _erlang_c_and_derivative(c, a)[0]


def _erlang_c_and_derivative(c: int, a: float) -> tuple[float, float]:
    """Erlang C and dC/da, in time independent of `c`.

    Up to EXACT_UP_TO replicas: the stable Erlang B recursion B_k = aB_{k-1}/(k + aB_{k-1}). Beyond:
    Erlang B is the Poisson ratio pmf(c; a) / cdf(c; a), with the pmf in log space as
    -c (rho - 1 - ln rho) - ln(2 pi c)/2 - stirlerr(c) (no cancellation between terms of size
    c ln c) and the cdf from scipy's regularized incomplete gamma (`pdtr`); dB/da =
    B (c/a - 1 + B) since d cdf/da = -pmf. Measured against the recursion over c = 65..10^6 and
    rho = 0.001..1 - 1e-9: relative error below 3e-13 for C and for dC/da; at c = 10^15 it agrees
    with the Halfin-Whitt limit.
    """
    if c <= EXACT_UP_TO:
        return _erlang_c_recursion(c, a)
    if a <= 0.0:
        return 0.0, 0.0
    from scipy.special import pdtr  # lazily: the model stays light to import

    rho = a / c
    log_pmf = -c * _x_minus_log1p(rho - 1.0) - 0.5 * math.log(2.0 * math.pi * c) - _stirlerr(c)
    b = math.exp(log_pmf) / float(pdtr(c, a))
    if b == 0.0:
        return 0.0, 0.0
    db = b * (c / a - 1.0 + b)
    return _c_from_b(c, a, b, db)


def _erlang_c_recursion(c: int, a: float) -> tuple[float, float]:
    b, db = 1.0, 0.0
    for k in range(1, c + 1):
        u = a * b
        du = b + a * db
        b, db = u / (k + u), k * du / (k + u) ** 2
    return _c_from_b(c, a, b, db)


def _c_from_b(c: int, a: float, b: float, db: float) -> tuple[float, float]:
    """Erlang C and dC/da from Erlang B and dB/da."""
    rho = a / c
    den = 1.0 - rho * (1.0 - b)
    dden = -(1.0 - b) / c + rho * db
    return b / den, (db * den - b * dden) / den**2


def _x_minus_log1p(x: float) -> float:
    """x - ln(1 + x), accurate near 0 (where it is ~x^2/2) by its series."""
    if abs(x) >= 0.1:
        return x - math.log1p(x)
    total, power, k = 0.0, x * x, 2
    while True:  # |x| < 0.1: each term is < 1/10 of the last, ~17 terms at most
        term = power / k
        total += term if k % 2 == 0 else -term
        if abs(term) <= 1e-17 * abs(total):
            return total
        power *= x
        k += 1


def _stirlerr(c: float) -> float:
    """ln(c!) - (c ln c - c + ln(2 pi c)/2), by its asymptotic series (error < 1e-16 for c > 64)."""
    c2 = c * c
    return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0) / c2) / c2) / c


def mmc_costs_and_slopes(c: int, works: Sequence[float]) -> tuple[list[float], list[float]]:
    """`MMcStation(c).queue_cost` and `.queue_slope` at every work point of `works` at once: the
    same arithmetic, run on numpy arrays (the optimizer's first tangents: ~40 points per
    station). Beyond EXACT_UP_TO replicas, point by point."""
    m = MMcStation(c)
    if c > EXACT_UP_TO:
        return [m.queue_cost(w) for w in works], [m.queue_slope(w) for w in works]
    import numpy as np  # lazily: the model stays light to import

    a = np.maximum(np.asarray(works, dtype=float), 0.0) / 1000.0
    b = np.ones_like(a)
    db = np.zeros_like(a)
    for k in range(1, c + 1):
        u = a * b
        du = b + a * db
        ku = k + u
        b, db = u / ku, k * du / (ku * ku)
    rho = a / c
    den = 1.0 - rho * (1.0 - b)
    dden = -(1.0 - b) / c + rho * db
    with np.errstate(divide="ignore", invalid="ignore"):
        cc = b / den
        dcc = (db * den - b * dden) / (den * den)
        one = 1.0 - rho
        cost = np.where(a == 0.0, 0.0, 1000.0 * rho * cc / one)
        slope = ((cc + a * dcc) * one + rho * cc) / (c * (one * one))
    over = a >= c
    cost[over] = math.inf
    slope[over] = math.inf
    return [float(x) for x in cost], [float(x) for x in slope]


@dataclass(frozen=True)
class MMcStation:
    """M/M/c with the mean service time of the mix (scenario-format.md).

    Queueing request-ms per second = 1000 * Lq, with Lq = rho * ErlangC(c, c*rho) / (1 - rho) the
    mean number waiting (Little's law), convex and increasing in the arrival rate.
    """

    replicas: int

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be in 1..{MAX_REPLICAS}, got {self.replicas}")

    @property
    def capacity(self) -> float:
        return 1000.0 * self.replicas

    def queue_cost(self, work: float) -> float:
        c = self.replicas
        a = max(work, 0.0) / 1000.0
        if a >= c:
            return math.inf
        if a == 0.0:
            return 0.0
        rho = a / c
        return 1000.0 * rho * erlang_c(c, a) / (1.0 - rho)

    def costs_and_slopes(self, works: Sequence[float]) -> tuple[list[float], list[float]]:
        """queue_cost and queue_slope at many points (the optimizer's first tangents)."""
        return mmc_costs_and_slopes(self.replicas, works)

    def queue_slope(self, work: float) -> float:
        c = self.replicas
        a = max(work, 0.0) / 1000.0
        if a >= c:
            return math.inf
        rho = a / c
        cc, dcc = _erlang_c_and_derivative(c, a)
        # d/da [ (a/c) * C / (1 - a/c) ] = [ (C + a C') (1 - a/c) + (a/c) C ] / (c (1 - a/c)^2)
        d_da = ((cc + a * dcc) * (1.0 - rho) + rho * cc) / (c * (1.0 - rho) ** 2)
        return d_da  # = 1000 * d_da / 1000 (cost is x1000, work is /1000)


@dataclass(frozen=True)
class MMcLatencyModel:
    """M/M/c stations sized by the scenario's replica counts."""

    replicas: dict[tuple[str, str], int]

    def station(self, service: str, cluster: str) -> MMcStation:
        return MMcStation(self.replicas[(service, cluster)])
