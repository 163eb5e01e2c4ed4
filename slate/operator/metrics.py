"""The operator's Prometheus metrics (`slate_` prefix, base units: seconds, milliseconds named as
such where the contract speaks milliseconds, USD per hour).

One registry per operator (tests run several); the xDS server's metrics (streams, NACKs) register
in the same registry, so one /metrics endpoint shows both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from slate.model.routing import Routing

SOLVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = ["namespace", "policy"]
        self.route_weight = Gauge(
            "slate_route_weight",
            "Weight in force (0-1) per route and destination cluster.",
            [*p, "from_service", "from_cluster", "to", "cluster"],
            registry=r,
        )
        self.target_weight = Gauge(
            "slate_route_target_weight",
            "Weight the rollout is moving towards, per route and destination cluster.",
            [*p, "from_service", "from_cluster", "to", "cluster"],
            registry=r,
        )
        self.predicted_latency = Gauge(
            "slate_predicted_latency_seconds",
            "Mean end-to-end latency the learned model predicts for the weights in force.",
            p,
            registry=r,
        )
        self.observed_latency = Gauge(
            "slate_observed_latency_seconds", "Mean end-to-end latency measured.", p, registry=r
        )
        self.predicted_egress = Gauge(
            "slate_predicted_egress_usd_per_hour",
            "Egress cost the model predicts for the weights in force.",
            p,
            registry=r,
        )
        self.observed_egress = Gauge(
            "slate_observed_egress_usd_per_hour", "Egress cost measured.", p, registry=r
        )
        self.solve_seconds = Histogram(
            "slate_solve_seconds",
            "Time to solve one interval's LP.",
            p,
            buckets=SOLVE_BUCKETS,
            registry=r,
        )
        self.interval_seconds = Histogram(
            "slate_interval_seconds",
            "Wall time of one control-loop interval (observe, learn, solve, publish).",
            p,
            buckets=SOLVE_BUCKETS,
            registry=r,
        )
        self.fit_quality = Gauge(
            "slate_fit_r2",
            "Goodness of fit (R^2) of a station's learned latency curve.",
            [*p, "service", "cluster"],
            registry=r,
        )
        self.exploration_steps = Counter(
            "slate_exploration_steps",
            "Intervals in which the loop moved past a curve's measured range to learn it.",
            p,
            registry=r,
        )
        self.rollout_restarts = Counter(
            "slate_rollout_restarts",
            "Intervals in which a stalled rollout's step damping was cleared (docs/control.md).",
            p,
            registry=r,
        )
        self.intervals = Counter("slate_intervals", "Control-loop intervals run.", p, registry=r)
        self.loop_errors = Counter(
            "slate_loop_errors",
            "Intervals that failed or held the weights, by reason.",
            [*p, "reason"],
            registry=r,
        )
        self.ready = Gauge(
            "slate_policy_ready", "1 when the policy's Ready condition is True.", p, registry=r
        )
        self.policies = Gauge("slate_policies", "TrafficPolicies the leader acts on.", registry=r)
        self.leader = Gauge(
            "slate_leader", "1 while this replica holds the leader Lease.", registry=r
        )
        self.leader_transitions = Counter(
            "slate_leader_transitions", "Times this replica became leader.", registry=r
        )
        self.status_writes = Counter(
            "slate_status_writes", "Status patches written, by result.", ["result"], registry=r
        )
        self.watch_errors = Counter(
            "slate_watch_errors",
            "Kubernetes watch failures (each is retried), by resource and cluster.",
            ["resource", "cluster"],
            registry=r,
        )
        self.endpoints = Gauge(
            "slate_endpoints",
            "Endpoints known per service and cluster.",
            ["service", "cluster"],
            registry=r,
        )
        self.served_policies = Gauge(
            "slate_xds_served_policies",
            "Policies whose status routes this replica serves over xDS.",
            registry=r,
        )
        self.remote_clusters = Gauge(
            "slate_remote_clusters",
            "Remote clusters watched through kubeconfig Secrets.",
            registry=r,
        )

    def set_routes(
        self, namespace: str, policy: str, routing: Routing | None, target: bool
    ) -> None:
        gauge = self.target_weight if target else self.route_weight
        self._clear(gauge, namespace, policy)
        if routing is None:
            return
        for r in routing.routes:
            for cluster, w in r.normalized().items():
                gauge.labels(namespace, policy, r.from_service, r.from_cluster, r.to, cluster).set(
                    w
                )

    def clear_fits(self, namespace: str, policy: str) -> None:
        """Drop the policy's fit series (before setting this interval's)."""
        self._clear(self.fit_quality, namespace, policy)

    def forget(self, namespace: str, policy: str) -> None:
        """A deleted policy leaves no series behind."""
        for m in (self.route_weight, self.target_weight, self.fit_quality):
            self._clear(m, namespace, policy)
        for g in (
            self.predicted_latency,
            self.observed_latency,
            self.predicted_egress,
            self.observed_egress,
            self.ready,
        ):
            with contextlib.suppress(KeyError):
                g.remove(namespace, policy)

    @staticmethod
    def _clear(metric: Gauge, namespace: str, policy: str) -> None:
        for labels in _label_sets(metric):
            if labels[:2] == (namespace, policy):
                metric.remove(*labels)


def _label_sets(metric: Gauge) -> Iterable[tuple[str, ...]]:
    # prometheus-client keeps a metric's children keyed by their label values
    return [tuple(k) for k in metric._metrics]


def set_finite(gauge: Gauge, value: float | None, scale: float = 1.0) -> None:
    if value is None or not math.isfinite(value):
        return
    gauge.set(value * scale)
