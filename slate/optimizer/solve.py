"""solve(): the optimal routing, by cutting planes over the LP of formulation.py.

Each round solves the LP with scipy's HiGHS, then tightens it where it was loose: a tangent at
every station whose queueing cost the LP underestimated, and aggregated keys re-priced at the
byte sizes of the round's loads. It stops when the LP's underestimate of the evaluated objective
is below `tolerance` (relative), so `bound` (the last LP objective) and the evaluated objective of
the returned routing bracket the optimum.

Demand that cannot fit under max_utilization is not an error: the result carries the shortfalls
(which services, by how much) and the least overloaded routing (capacity.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linprog

from slate.model.latency import LatencyModel
from slate.model.routing import Prediction, Route, Routing
from slate.model.scenario import Scenario
from slate.optimizer import baselines
from slate.optimizer.capacity import Shortfall, shortfalls
from slate.optimizer.formulation import Formulation, build
from slate.sim.evaluate import Evaluation, evaluate

log = logging.getLogger(__name__)

Policy = Literal["optimal", "local", "global", "waterfall"]
POLICIES: tuple[Policy, ...] = ("optimal", "local", "global", "waterfall")


class SolveError(RuntimeError):
    """The LP solver failed (numerical trouble, time limit); the caller keeps its last routing."""


@dataclass(frozen=True)
class SolveStats:
    variables: int
    constraints: int
    rounds: int
    seconds: float


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    routing: Routing  # with `predicted` from the evaluator
    evaluation: Evaluation
    shortfalls: tuple[Shortfall, ...] = ()
    bound: float | None = None  # LP lower bound on the objective (optimal policy only)
    stats: SolveStats | None = None

    @property
    def over_capacity(self) -> bool:
        return bool(self.shortfalls)

    @property
    def gap(self) -> float | None:
        """Relative distance of the evaluated objective above the LP bound."""
        if self.bound is None or not math.isfinite(self.evaluation.objective):
            return None
        return (self.evaluation.objective - self.bound) / max(abs(self.bound), 1e-12)


def _with_prediction(routing: Routing, ev: Evaluation) -> Routing:
    pred = Prediction(ev.mean_latency_ms, ev.egress_usd_per_hour, ev.max_utilization)
    return Routing(routing.routes, pred)


def run_policy(
    scenario: Scenario, policy: Policy, latency: LatencyModel | None = None
) -> PolicyResult:
    if policy == "optimal":
        return solve(scenario, latency)
    make = {
        "local": baselines.local_routing,
        "global": baselines.global_routing,
        "waterfall": baselines.waterfall_routing,
    }[policy]
    routing = make(scenario)
    ev = evaluate(scenario, routing, latency)
    return PolicyResult(
        policy, _with_prediction(routing, ev), ev, tuple(shortfalls(scenario, latency))
    )


def solve(
    scenario: Scenario,
    latency: LatencyModel | None = None,
    *,
    tolerance: float = 1e-4,
    max_rounds: int = 12,
) -> PolicyResult:
    latency = latency or scenario.latency_model()
    started = time.perf_counter()
    short = shortfalls(scenario, latency)
    # A service that cannot fit is held at the least utilization any routing gives it.
    caps = {s.service: s.min_utilization * (1 + 1e-7) for s in short}
    unpriced = {s.service for s in short if s.min_utilization >= 1.0}
    f = build(scenario, latency, caps, unpriced)
    bounds = f.bounds()

    x: np.ndarray | None = None
    lp_objective = math.nan
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        a_ub, b_ub = f.inequalities()
        res = linprog(
            f.objective_vector(),
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=f.a_eq,
            b_eq=f.b_eq,
            bounds=bounds,
            method="highs",
        )
        if res.status != 0 or res.x is None:
            raise SolveError(f"HiGHS: {res.message} (status {res.status}, round {rounds})")
        x = np.asarray(res.x)
        lp_objective = float(res.fun)
        if not _refine(f, x, lp_objective, tolerance):
            break
    assert x is not None
    routing = _routing(f, x)
    ev = evaluate(scenario, routing, latency)
    stats = SolveStats(
        variables=f.n_vars,
        constraints=f.a_eq.shape[0] + len(f.tangent_rows),
        rounds=rounds,
        seconds=time.perf_counter() - started,
    )
    log.debug(
        "solved scenario=%s rounds=%d lp=%.6g evaluated=%.6g seconds=%.3f",
        scenario.name,
        rounds,
        lp_objective,
        ev.objective,
        stats.seconds,
    )
    return PolicyResult(
        "optimal", _with_prediction(routing, ev), ev, tuple(short), lp_objective, stats
    )


def _refine(f: Formulation, x: np.ndarray, lp_objective: float, tolerance: float) -> bool:
    """Tighten the LP where round `x` shows it loose; False when there is nothing left to gain."""
    n_y, n_s = f.n_y, f.n_s
    w = x[n_y : n_y + n_s]
    t = x[n_y + n_s :]
    under = np.zeros(n_s)
    for s, spec in enumerate(f.stations):
        if spec.priced:
            under[s] = spec.model.queue_cost(float(w[s])) - float(t[s])
    old_kb = f.key_kb.copy()
    f.update_byte_sizes(f.loads(x))
    kb_moved = bool(np.max(np.abs(old_kb - f.key_kb), initial=0.0) > 1e-9)
    loose = float(under.sum()) / f.total_rps > tolerance * max(abs(lp_objective), 1e-9)
    if not (loose or kb_moved):
        return False
    added = False
    floor = 1e-3 * tolerance * max(abs(lp_objective), 1e-9) * f.total_rps / max(n_s, 1)
    for s in np.flatnonzero(under > floor).tolist():
        added |= f.add_tangent(s, float(w[s]))
    return added or kb_moved


def _routing(f: Formulation, x: np.ndarray) -> Routing:
    topo = f.scenario.topology
    app = f.scenario.app
    y = x[: f.n_y]
    routes: list[Route] = []
    start = 0
    for i, k in enumerate(f.keys):
        dsts = f.key_dsts[i]
        vals = np.maximum(y[start : start + len(dsts)], 0.0)
        start += len(dsts)
        total = float(vals.sum())
        if total > 1e-9:
            weights = {
                topo.clusters[d]: float(v / total)
                for d, v in zip(dsts, vals, strict=True)
                if v / total > 1e-7
            }
        else:  # no traffic on this key: the default, nearest cluster
            weights = {topo.nearest(k.from_cluster, list(app.service_of(k.to).clusters)): 1.0}
        routes.append(Route(k.from_service, k.from_cluster, k.to, weights))
    return Routing(tuple(routes))
