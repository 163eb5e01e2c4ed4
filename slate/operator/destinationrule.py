"""output: destinationRule — the weights as Istio DestinationRules (localityLbSetting.distribute).

A DestinationRule splits by the caller's locality, not by the calling service: for each routed
destination service and each source cluster, the weights of every route into that service from
that cluster (all calling services, all endpoint classes) are averaged, then written as integer
percentages summing to exactly 100 per `from` locality (largest remainder; localities with no
weight are left out, which Istio reads as "gets nothing"). Localities are `REGION/*`, with the
cluster's region from the policy.

One DestinationRule per routed service, named `slate-<policy>-<service>`, labelled
`slate.dev/policy`, owned by the TrafficPolicy (so Kubernetes' garbage collector removes it with
the policy; the operator also deletes them itself on delete). Every change is a full istiod push:
use a longer `rollout.interval` with this output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from slate.model.policy import TrafficPolicy
from slate.model.routing import Routing
from slate.xds.weights import integer_weights

GROUP = "networking.istio.io"
VERSION = "v1beta1"
PLURAL = "destinationrules"
POLICY_LABEL = "slate.dev/policy"


def distribute(policy: TrafficPolicy, routing: Routing) -> dict[str, list[dict[str, Any]]]:
    """Per routed service: the `distribute` list (`[{from, to: {locality: percent}}]`)."""
    region = {c.name: c.region for c in policy.clusters}
    routed = {s.name for s in policy.services}
    # (service, from region) -> destination region -> summed normalised weight, and the count
    sums: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in routing.routes:
        service = r.to.split(".", 1)[0]
        if service not in routed or r.from_cluster not in region:
            continue
        weights = r.normalized()
        if not weights:
            continue
        key = (service, region[r.from_cluster])
        counts[key] += 1
        for cluster, w in weights.items():
            if cluster in region:
                sums[key][region[cluster]] += w
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (service, from_region), by_region in sorted(sums.items()):
        n = counts[(service, from_region)]
        percent = integer_weights({r: w / n for r, w in by_region.items()}, 100)
        if not percent:
            continue
        out[service].append(
            {
                "from": f"{from_region}/*",
                "to": {f"{r}/*": p for r, p in sorted(percent.items())},
            }
        )
    return dict(out)


def rule_name(policy: str, service: str) -> str:
    return f"slate-{policy}-{service}"[:253]


def destination_rules(
    policy: TrafficPolicy,
    routing: Routing,
    owner_uid: str | None = None,
    domain: str = "cluster.local",
) -> list[dict[str, Any]]:
    """The DestinationRule manifests for `routing` (one per service that has any weights)."""
    out = []
    for service, dist in sorted(distribute(policy, routing).items()):
        meta: dict[str, Any] = {
            "name": rule_name(policy.name, service),
            "namespace": policy.namespace,
            "labels": {POLICY_LABEL: policy.name, "app.kubernetes.io/managed-by": "slate"},
        }
        if owner_uid:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "slate.dev/v1alpha1",
                    "kind": "TrafficPolicy",
                    "name": policy.name,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ]
        out.append(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DestinationRule",
                "metadata": meta,
                "spec": {
                    "host": f"{service}.{policy.namespace}.svc.{domain}",
                    "trafficPolicy": {
                        "loadBalancer": {"localityLbSetting": {"enabled": True, "distribute": dist}}
                    },
                },
            }
        )
    return out


class RuleStore(Protocol):
    """Where DestinationRules are written (the Kubernetes API; a dict in tests)."""

    def apply(self, rule: Mapping[str, Any]) -> None: ...
    def delete_all(self, namespace: str, policy: str, keep: Sequence[str] = ()) -> None: ...


class DestinationRulePublisher:
    """A control-loop publisher writing the weights in force as DestinationRules."""

    def __init__(self, store: RuleStore, policy: TrafficPolicy, owner_uid: str | None) -> None:
        self.store = store
        self.policy = policy
        self.owner_uid = owner_uid
        self._last: list[dict[str, Any]] | None = None

    def publish(self, report: Any) -> None:
        if not getattr(report, "publish_routes", True):
            return
        rules = destination_rules(self.policy, report.routes, self.owner_uid)
        if rules == self._last:
            return
        for rule in rules:
            self.store.apply(rule)
        self.store.delete_all(
            self.policy.namespace, self.policy.name, keep=[r["metadata"]["name"] for r in rules]
        )
        self._last = rules
