"""The operator's pure parts: Istio node mapping, DestinationRule distribute, EndpointSlice
parsing and the per-(service, cluster) index, the status follower, conflicts, the CLI's flag errors.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from slate.cli import main
from slate.model.policy import load_policy
from slate.model.routing import Route, Routing
from slate.operator.conflicts import Claim, conflict_message, conflict_with
from slate.operator.controller import until_slot
from slate.operator.destinationrule import DestinationRulePublisher, destination_rules, distribute
from slate.operator.endpoints import EndpointIndex, slice_endpoints
from slate.operator.follower import StatusFollower
from slate.operator.istio import istio_or_plain_view, istio_view
from slate.xds.debounce import merge_clusters
from slate.xds.endpoints import Endpoint, EndpointSet
from slate.xds.follower import FollowerCache
from slate.xds.views import InvalidNode, ViewKey

ROOT = Path(__file__).resolve().parents[2]


def node(
    node_id: str, meta: dict[str, Any] | None = None, cluster: str = "", region: str = ""
) -> Any:
    n = base_pb2.Node(id=node_id, cluster=cluster)
    n.locality.region = region
    if meta is not None:
        s = struct_pb2.Struct()
        s.update(meta)
        n.metadata.CopyFrom(s)
    return n


def test_istio_sidecar_and_gateway_views() -> None:
    sidecar = node(
        "sidecar~10.0.0.5~frontend-7d9f.shop~shop.svc.cluster.local",
        {
            "CLUSTER_ID": "us-west",
            "NAMESPACE": "shop",
            "WORKLOAD_NAME": "frontend-v2",
            "LABELS": {"app": "frontend-app", "service.istio.io/canonical-name": "frontend"},
        },
    )
    assert istio_view(sidecar) == ViewKey("frontend", "us-west")
    by_app = node("sidecar~x", {"CLUSTER_ID": "c1", "LABELS": {"app": "cart"}})
    assert istio_view(by_app) == ViewKey("cart", "c1")
    by_workload = node("sidecar~x", {"CLUSTER_ID": "c1", "WORKLOAD_NAME": "ads"})
    assert istio_view(by_workload) == ViewKey("ads", "c1")
    gateway = node("router~10.0.0.9~gw.istio-system~istio-system.svc", {"CLUSTER_ID": "us-east"})
    assert istio_view(gateway) == ViewKey("ingress", "us-east")
    with pytest.raises(InvalidNode):
        istio_view(node("sidecar~x", {"CLUSTER_ID": "c1"}))


def test_plain_envoy_still_maps_and_bad_nodes_are_refused() -> None:
    assert istio_or_plain_view(node("e1", cluster="frontend", region="us-east")) == ViewKey(
        "frontend", "us-east"
    )
    assert istio_or_plain_view(node("sidecar~x", {"CLUSTER_ID": "w", "LABELS": {"app": "a"}})) == (
        ViewKey("a", "w")
    )
    with pytest.raises(InvalidNode):
        istio_or_plain_view(node("e2"))


def test_destination_rule_percentages_sum_to_100_per_locality() -> None:
    policy = load_policy(ROOT / "examples/policies/boutique-destinationrule.yaml")
    routing = Routing(
        (
            Route("frontend", "us-west", "productcatalog.list", {"us-west": 0.5, "us-east": 0.5}),
            Route(
                "frontend", "us-west", "productcatalog.get", {"us-west": 1 / 3, "eu-west": 2 / 3}
            ),
            Route(
                "checkout",
                "us-west",
                "currency",
                {"us-west": 0.333, "us-east": 0.333, "eu-west": 0.334},
            ),
            Route("frontend", "us-east", "cart", {"us-east": 1.0, "eu-west": 0.0}),
        )
    )
    dist = distribute(policy, routing)
    pc = dist["productcatalog"][0]
    assert pc["from"] == "us-west1/*"
    assert pc["to"] == {"us-west1/*": 42, "us-east1/*": 25, "europe-west1/*": 33}
    for rules in dist.values():
        for entry in rules:
            assert sum(entry["to"].values()) == 100
            assert all(isinstance(v, int) and v >= 1 for v in entry["to"].values())
    assert dist["cart"] == [{"from": "us-east1/*", "to": {"us-east1/*": 100}}]
    rules = destination_rules(policy, routing, owner_uid="u1")
    cart = next(r for r in rules if r["metadata"]["name"] == "slate-boutique-cart")
    assert cart["spec"]["host"] == "cart.boutique.svc.cluster.local"
    assert cart["metadata"]["ownerReferences"][0]["uid"] == "u1"
    lb = cart["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]
    assert lb["enabled"] is True and "failover" not in lb


class Store:
    def __init__(self) -> None:
        self.rules: dict[str, dict[str, Any]] = {}

    def apply(self, rule: Any) -> None:
        self.rules[rule["metadata"]["name"]] = rule

    def delete_all(self, namespace: str, policy: str, keep: Any = ()) -> None:
        for name in [n for n in self.rules if n not in keep]:
            del self.rules[name]


class R:
    def __init__(self, routes: Routing, publish: bool = True) -> None:
        self.routes = routes
        self.publish_routes = publish


def test_destination_rule_publisher_writes_changes_only_and_respects_pause() -> None:
    policy = load_policy(ROOT / "examples/policies/boutique-destinationrule.yaml")
    store = Store()
    pub = DestinationRulePublisher(store, policy, None)
    routing = Routing((Route("frontend", "us-west", "cart", {"us-west": 1.0}),))
    pub.publish(R(routing))
    assert list(store.rules) == ["slate-boutique-cart"]
    pub.publish(R(Routing((Route("frontend", "us-west", "currency", {"us-west": 1.0}),))))
    assert list(store.rules) == ["slate-boutique-currency"]  # the old one is removed
    pub.publish(R(routing, publish=False))
    assert list(store.rules) == ["slate-boutique-currency"]  # paused/dry run: untouched


def slice_(
    svc: str, ns: str, name: str, addrs: list[str], port: int = 8080, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addrs],
        "ports": [{"name": "http", "port": port}],
        **extra,
    }


def test_slice_endpoints_ready_ips_and_port_choice() -> None:
    s = slice_("cart", "shop", "s1", ["10.0.0.1", "10.0.0.2"], port=7070)
    s["endpoints"].append({"addresses": ["10.0.0.3"], "conditions": {"ready": False}})
    assert slice_endpoints(s, 7070) == [Endpoint("10.0.0.1", 7070), Endpoint("10.0.0.2", 7070)]
    two = slice_("cart", "shop", "s2", ["10.0.0.1"])
    two["ports"] = [{"name": "grpc", "port": 9000}, {"name": "http", "port": 7070}]
    assert slice_endpoints(two, 7070) == [Endpoint("10.0.0.1", 7070)]
    assert slice_endpoints(two, 1) == [Endpoint("10.0.0.1", 9000)]  # no match: the first port
    assert slice_endpoints({**s, "addressType": "FQDN"}, 7070) == []
    bad = slice_("cart", "shop", "s3", ["not-an-ip"])
    assert slice_endpoints(bad, 8080) == []


def test_endpoint_index_per_service_and_cluster() -> None:
    sent: list[tuple[str, str, Any]] = []
    idx = EndpointIndex(lambda s, c, e: sent.append((s, c, e)))

    def last() -> tuple[str, str, Any]:
        return sent[-1]

    idx.handle("east", "SYNC", [slice_("cart", "shop", "a", ["10.0.0.1"])])
    assert sent == []  # no policy routes cart yet
    idx.set_routed({"shop": {"cart": 8080}})
    assert last() == ("cart", "east", (Endpoint("10.0.0.1", 8080),))
    idx.handle("east", "ADDED", [slice_("cart", "shop", "b", ["10.0.0.2"])])
    assert last()[2] == (Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080))
    idx.handle("east", "ADDED", [slice_("cart", "other", "c", ["10.9.9.9"])])  # other namespace
    assert len(sent) == 2
    idx.handle("west", "SYNC", [slice_("cart", "shop", "w", ["10.1.0.1"])])
    assert last() == ("cart", "west", (Endpoint("10.1.0.1", 8080),))
    idx.drop_cluster("west")
    assert last() == ("cart", "west", None)
    idx.handle("east", "DELETED", [slice_("cart", "shop", "a", [])])
    assert last() == ("cart", "east", (Endpoint("10.0.0.2", 8080),))


def status(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"routes": routes}


def policy_obj(
    name: str, output: str = "xds", routes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"output": output, "services": [{"name": "cart", "port": 7070}]},
        "status": status(routes or []),
    }


ROUTE = {
    "fromService": "frontend",
    "fromCluster": "east",
    "to": "cart",
    "weights": [{"cluster": "east", "weight": 0.25}, {"cluster": "west", "weight": 0.75}],
}


def test_status_follower_serves_xds_policies_only() -> None:
    cache = FollowerCache(EndpointSet({}))
    routed: list[Any] = []
    f = StatusFollower(cache, on_routed=routed.append)
    f.handle("SYNC", [policy_obj("a", routes=[ROUTE])])
    r = cache.routing.get("frontend", "east", "cart")
    assert r is not None and r.weights == {"east": 0.25, "west": 0.75}
    assert routed[-1] == {"shop": {"cart": 7070}}
    f.handle("MODIFIED", [policy_obj("a", output="dryRun", routes=[ROUTE])])
    assert cache.routing.get("frontend", "east", "cart") is None
    f.handle("MODIFIED", [policy_obj("a", routes=[ROUTE])])
    bad = policy_obj("a", routes=[{**ROUTE, "weights": [{"cluster": "east", "weight": -1}]}])
    f.handle("MODIFIED", [bad])  # malformed status: the previous routes stay
    assert f.rejected == 1 and cache.routing.get("frontend", "east", "cart") is not None
    f.handle("DELETED", [policy_obj("a")])
    assert cache.routing.get("frontend", "east", "cart") is None and f.served == set()
    f.handle("SYNC", [policy_obj("b", routes=[ROUTE])])
    f.handle("SYNC", [])  # gone while the watch was down
    assert cache.routing.get("frontend", "east", "cart") is None


def test_conflict_older_wins_by_time_then_name() -> None:
    a = Claim("ns", "a", "2026-01-01T00:00:00Z", frozenset({"cart", "ad"}))
    b = Claim("ns", "b", "2026-01-02T00:00:00Z", frozenset({"cart"}))
    c = Claim("ns", "c", "2026-01-01T00:00:00Z", frozenset({"ad"}))
    assert conflict_with(a, [a, b, c]) is None
    got = conflict_with(b, [a, b, c])
    assert got is not None and got[0].name == "a" and got[1] == "cart"
    got = conflict_with(c, [a, b, c])  # same second: the name decides
    assert got is not None and got[0].name == "a"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--prometheus", "prom:9090"], "--prometheus: must be an http(s) URL"),
        (["--prometheus", "http://p:9090", "--xds-port", "70000"], "--xds-port: must be a port"),
        (["--prometheus", "http://p:9090", "--liveness", "tcp://x"], "--liveness: must be"),
        (
            ["--prometheus", "http://p:9090", "--lease-seconds", "1"],
            "--lease-seconds: must be >= 2",
        ),
        (
            ["--prometheus", "http://p:9090", "--kubeconfig", "/nonexistent"],
            "--kubeconfig: no such",
        ),
    ],
)
def test_operator_cli_bad_flags_exit_2_with_one_line(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["operator", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def _wired() -> tuple[StatusFollower, EndpointIndex, FollowerCache]:
    """The parts app.py wires on every replica (the Debouncer in between flushed at once)."""
    cache = FollowerCache(EndpointSet({}))

    def sink(service: str, cluster: str, eps: Any) -> None:
        cache.set_endpoints(merge_clusters(cache.endpoints, {(service, cluster): eps}))

    index = EndpointIndex(sink)
    return StatusFollower(cache, on_routed=index.set_routed), index, cache


def test_deleted_policy_reverts_the_views_to_default_routing() -> None:
    follower, index, cache = _wired()
    index.handle("east", "SYNC", [slice_("cart", "shop", "e", ["10.0.0.1"])])
    index.handle("west", "SYNC", [slice_("cart", "shop", "w", ["10.1.0.1"])])
    follower.handle("SYNC", [policy_obj("a", routes=[ROUTE])])
    view = ViewKey("frontend", "east")
    res = cache.resource(view, "cart")
    assert res is not None and res.plan == (("east", 0, 2500), ("west", 0, 7500))

    follower.handle("DELETED", [policy_obj("a")])
    # no weights of the deleted policy, and no empty assignment: slate's default routing, local
    # first, with the other cluster as the priority-1 backstop
    res = cache.resource(view, "cart")
    assert res is not None and res.plan == (("east", 0, 10000), ("west", 1, 1))
    assert index.retired == {"cart"}
    # the retired service's endpoints still follow the slices
    index.handle("east", "ADDED", [slice_("cart", "shop", "e2", ["10.0.0.2"])])
    assert len(cache.endpoints.services["cart"]["east"]) == 2
    # a policy routing it again takes it back
    follower.handle("ADDED", [policy_obj("b", routes=[ROUTE])])
    assert index.retired == frozenset()
    res = cache.resource(view, "cart")
    assert res is not None and res.plan == (("east", 0, 2500), ("west", 0, 7500))


def test_one_service_name_one_owner_across_namespaces() -> None:
    follower, index, cache = _wired()
    index.handle("east", "SYNC", [slice_("cart", "shop", "e", ["10.0.0.1"])])
    index.handle("east", "ADDED", [slice_("cart", "a-team", "e", ["10.9.0.1"])])
    old = policy_obj("shop", routes=[ROUTE])
    old["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    new = policy_obj("mine")
    new["metadata"].update(namespace="a-team", creationTimestamp="2026-02-01T00:00:00Z")
    follower.handle("SYNC", [new, old])
    # the older policy's namespace owns the name, though "a-team" sorts first
    assert follower.routed() == {"shop": {"cart": 7070}}
    assert cache.endpoints.services["cart"]["east"] == (Endpoint("10.0.0.1", 8080),)


def test_conflicts_span_namespaces_and_name_the_other_policy() -> None:
    old = Claim("shop", "a", "2026-01-01T00:00:00Z", frozenset({"cart"}))
    new = Claim("a-team", "b", "2026-02-01T00:00:00Z", frozenset({"cart", "ads"}))
    got = conflict_with(new, [old, new])
    assert got is not None and got[0].key == "shop/a" and got[1] == "cart"
    assert conflict_with(old, [old, new]) is None
    msg = conflict_message(got[0], got[1], new.namespace)
    assert "shop/a" in msg and "without its namespace" in msg
    assert "namespace" not in conflict_message(got[0], got[1], "shop")
    same_second = Claim("a-team", "c", "2026-01-01T00:00:00Z", frozenset({"cart"}))
    assert conflict_with(old, [old, same_second]) == (same_second, "cart")  # namespace decides


def test_retired_services_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("slate.operator.endpoints.RETIRED_LIMIT", 2)
    sent: list[tuple[str, str, Any]] = []
    idx = EndpointIndex(lambda s, c, e: sent.append((s, c, e)))
    idx.handle("east", "SYNC", [slice_(f"s{i}", "shop", f"e{i}", ["10.0.0.1"]) for i in range(3)])
    idx.set_routed({"shop": {"s0": 80, "s1": 80, "s2": 80}})
    idx.set_routed({})
    assert idx.retired == {"s1", "s2"}  # the oldest went past the limit: no longer served
    assert ("s0", "east", None) in sent and ("s1", "east", None) not in sent


def test_policies_created_together_spread_over_the_interval() -> None:
    """50 policies whose first step ran at the same instant: their next steps fall across the whole
    interval (no burst of 50 solves every 30 s), each 0.5-1.5 intervals away, and on a policy's
    own grid the period is exactly the interval, however long the step took."""
    now = 1_000_000.0
    delays = sorted(until_slot(now, 30.0, f"shop/p{i}") for i in range(50))
    assert all(15.0 <= d <= 45.0 for d in delays)
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert max(gaps) < 6.0  # 50 phases over 30 s: no gap of a fifth of the interval
    first = until_slot(now, 30.0, "shop/p0")
    slot = now + first
    assert until_slot(slot + 2.5, 30.0, "shop/p0") == pytest.approx(27.5)  # a 2.5 s step
    assert until_slot(slot, 30.0, "shop/p0") == pytest.approx(30.0)


def test_shipped_rbac_has_no_wildcards_and_no_cluster_wide_secrets() -> None:
    """deploy/rbac*.yaml: no `*` anywhere, Secrets and Leases only through the namespaced Role,
    nothing that writes pods, RBAC or webhooks beyond the operator's own configuration name."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    for name in ("rbac.yaml", "rbac-remote.yaml"):
        docs = list(yaml.safe_load_all((root / "deploy" / name).read_text()))
        for doc in docs:
            for rule in doc.get("rules", []):
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), (name, rule)
                if doc["kind"] == "ClusterRole":
                    assert not {"secrets", "leases", "pods"} & set(rule["resources"]), rule
                    writes = set(rule["verbs"]) - {"get", "list", "watch"}
                    if "webhookconfigurations" in " ".join(rule["resources"]) and writes - {
                        "create"
                    }:
                        assert rule.get("resourceNames"), rule
                assert not any(r.startswith(("roles", "clusterroles")) for r in rule["resources"])
