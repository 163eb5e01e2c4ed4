"""The operator on real parts: two kube-apiservers 1.20 ("us-east", the local cluster, and
"us-west", a remote one reached through a kubeconfig Secret), operator replicas as processes, and a
real Envoy taking its endpoints from the operator's xDS.

The control loop is the stand-in (standin_loop.py, named as such), so that these tests' timing
depends on the operator only: everything else is the production operator (the real loop runs end to
end in test_operator_real_loop.py). The tests run in file order on one set-up: status and weights
appear; Envoy receives them; an endpoint added in the remote cluster reaches Envoy; the webhook
rejects a cross-cluster mistake naming the field; a restart resumes with no weight jump; two
replicas elect one leader and the other takes over within two lease durations while xDS keeps
serving; delete cleans up and puts the Envoy back on local-first.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from certs import make_ca, make_cert
from envoy_harness import Envoy, TlsClient, Upstreams
from kube_harness import KubeApi
from operator_world import (
    LEASE_S,
    ROOT,
    SLICES,
    World,
    conditions,
    ensure,
    prepare_clusters,
    slice_doc,
    wait_for,
    weights,
)

pytest_plugins = ["kube_fixtures"]
TLS_FILES = {"tls_cert": "server.crt", "tls_key": "server.key", "tls_client_ca": "ca.crt"}
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(
    kube: KubeApi, kube_remote: KubeApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    ups = Upstreams({"us-east": 1, "us-west": 2})
    w = World(kube, kube_remote, tmp_path_factory.mktemp("operator"), ups)
    try:
        prepare_clusters(kube, kube_remote, ups)
        yield w
    finally:
        w.close()


def apply_policy(world: World, **spec: Any) -> None:
    doc = yaml.safe_load((ROOT / "examples/policies/shop.yaml").read_text())
    doc["spec"]["rollout"]["interval"] = "5s"
    doc["spec"].update(spec)
    done = world.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert done.returncode == 0, done.stderr


def test_status_and_weights_appear(world: World) -> None:
    a = world.start_replica("a")
    wait_for(world.leader, 3 * LEASE_S, "a leader")
    apply_policy(world)

    def current() -> dict[str, Any] | None:
        p = world.policy()
        st = p.get("status") or {}
        ok = st.get("routes") and st.get("observedGeneration") == p["metadata"]["generation"]
        return st if ok else None

    st = wait_for(current, 30, "status routes for the current generation")
    assert conditions(st)["Ready"][0] == "True"
    assert st["observedGeneration"] == world.policy()["metadata"]["generation"]
    assert {"lastSolveTime", "solveSeconds", "predicted", "targetRoutes"} <= set(st)
    w = weights(st)
    assert w and abs(sum(w.values()) - 1) < 1e-6
    assert a.metric("slate_leader") == 1
    got = world.kube.kubectl("get", "tp", "-n", "shop")
    assert "True" in got.stdout, got.stdout

    # Kubernetes Events for the transitions
    def reasons() -> set[str]:
        events = world.kube.request("GET", "/api/v1/namespaces/shop/events")["items"]
        return {e["reason"] for e in events if e["involvedObject"]["name"] == "shop"}

    wait_for(lambda: {"Optimal", "Fresh"} <= reasons(), 20, "events")
    # metrics: weights per route and destination cluster, leader status
    assert a.metric('slate_intervals_total{namespace="shop",policy="shop"}') is not None


def test_envoy_receives_weights_from_operator_xds(world: World) -> None:
    a = world.leader()
    assert a is not None
    envoy = world.envoy("envoy-a", a.xds_port)

    def matches() -> bool:
        st = world.policy()["status"]
        want = weights(st)
        got = envoy.eds_weights().get("cart", {})
        total = sum(x[1] for x in got.values()) or 1
        return bool(got) and all(
            abs(got.get(c, (0, 0))[1] / total - v) < 0.01 for c, v in want.items() if v > 0
        )

    wait_for(matches, 30, "Envoy weights = status weights")
    assert (a.metric('slate_xds_streams{api="ads",mode="sotw",view="ingress@us-east"}') or 0) >= 1


def endpoint_count(envoy: Envoy, cluster: str = "cart") -> dict[str, int]:
    dump = json.loads(envoy.get("/config_dump?include_eds"))
    out: dict[str, int] = {}
    for section in dump.get("configs", []):
        for entry in section.get("static_endpoint_configs", []) + section.get(
            "dynamic_endpoint_configs", []
        ):
            cla = entry.get("endpoint_config", {})
            if cla.get("cluster_name") == cluster:
                for loc in cla.get("endpoints", []):
                    region = loc.get("locality", {}).get("region", "")
                    out[region] = len(loc.get("lb_endpoints", []))
    return out


def test_remote_endpoint_reaches_envoy(world: World) -> None:
    envoy = world.envoys[0]
    wait_for(lambda: endpoint_count(envoy).get("us-west") == 1, 20, "one us-west endpoint")
    west1 = world.upstreams.servers["us-west"][1].server_address[1]
    t0 = time.monotonic()
    ensure(world.remote, SLICES, slice_doc("cart-west-1", west1))
    wait_for(lambda: endpoint_count(envoy).get("us-west") == 2, 10, "new remote endpoint", 0.02)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, elapsed  # typically well under a second


def test_webhook_rejects_cross_cluster_mistake(world: World) -> None:
    doc = yaml.safe_load((ROOT / "examples/policies/shop.yaml").read_text())
    doc["metadata"]["name"] = "typo"
    doc["spec"]["network"]["rtt"][0]["to"] = "us-north"

    def rejected() -> str | None:
        done = world.kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
        return done.stderr if done.returncode != 0 else None

    msg = wait_for(rejected, 30, "webhook in place")
    assert "spec.network.rtt[0].to" in msg and "unknown cluster 'us-north'" in msg


def test_restart_resumes_without_a_jump(world: World) -> None:
    before = weights(world.policy()["status"])
    for r in list(world.replicas):
        if r.alive():
            assert r.stop(), f"{r.name} did not stop on SIGTERM"
            assert r.proc.returncode == 0
    t0 = time.monotonic()
    world.start_replica("a2")
    wait_for(world.leader, 4 * LEASE_S, "a2 leader")
    st = wait_for(
        lambda: (s := world.policy()["status"]) and s.get("lastSolveTime") and s, 30, "solve"
    )
    # the first interval after the restart moves at most maxShiftPerInterval from before
    gen_time = time.monotonic() - t0
    after = weights(st)
    assert after
    for c in before:
        assert abs(after.get(c, 0) - before[c]) <= 0.1 + 1e-6, (before, after, gen_time)


def test_two_replicas_one_leader_and_failover(world: World) -> None:
    # b serves its xDS port over mTLS (as a mesh would run it); its Envoy presents a certificate
    # with an Istio-style SPIFFE identity signed by the same CA.
    certs = world.workdir / "certs"
    certs.mkdir(exist_ok=True)
    make_ca(certs, "ca")
    make_cert(certs, "server", "DNS:localhost,IP:127.0.0.1")
    make_cert(certs, "gateway", "URI:spiffe://cluster.local/ns/shop/sa/ingress")
    tls = {name: str(certs / f) for name, f in TLS_FILES.items()}
    b = world.start_replica("b", webhook=False, tls=tls)
    time.sleep(2 * 0.5 + 0.5)
    leaders = [r for r in world.replicas if r.alive() and r.metric("slate_leader") == 1]
    assert len(leaders) == 1
    old = leaders[0]
    assert old.name != "b" and b.metric("slate_leader") == 0
    # a proxy on the follower gets the same weights
    gateway = TlsClient(certs / "ca.crt", certs / "gateway.crt", certs / "gateway.key")
    envoy_b = world.envoy("envoy-b", b.xds_port, tls=gateway)
    want = weights(world.policy()["status"])
    wait_for(lambda: envoy_b.eds_weights().get("cart"), 20, "follower serves")
    old.kill()
    t0 = time.monotonic()
    wait_for(lambda: b.metric("slate_leader") == 1, 2 * LEASE_S + 2, "b takes over", 0.05)
    took = time.monotonic() - t0
    assert took <= 2 * LEASE_S, took
    # xDS kept serving on b throughout, and the new leader writes status again
    assert envoy_b.eds_weights().get("cart")
    t1 = time.monotonic()
    wait_for(
        lambda: world.policy()["status"].get("lastSolveTime") and time.monotonic() - t1 > 0.1,
        30,
        "new leader solves",
    )
    after = weights(world.policy()["status"])
    for c in want:
        assert abs(after.get(c, 0) - want[c]) <= 0.2 + 1e-6  # at most two rollout steps


def test_delete_cleans_up(world: World) -> None:
    b = world.leader()
    assert b is not None
    done = world.kube.kubectl("delete", "tp", "shop", "-n", "shop", "--wait=true", "--timeout=20s")
    assert done.returncode == 0, done.stderr
    with pytest.raises(urllib.error.HTTPError):
        world.policy()
    # no replica serves the policy's routes any more, and the leader dropped its series
    wait_for(lambda: b.metric("slate_xds_served_policies") == 0, 20, "routes forgotten")
    assert b.metric('slate_policy_ready{namespace="shop",policy="shop"}') is None
    assert b.metric('slate_route_weight{namespace="shop"') is None
    # nothing kept behind: no finalizer was needed, no other object was written for output xds
    listed = world.kube.request("GET", "/apis/slate.dev/v1alpha1/trafficpolicies")
    assert listed["items"] == []
    # the proxy on the leader is back on slate's default routing (local first), endpoints kept
    envoy = world.envoys[-1]

    def local_first() -> bool:
        got = envoy.eds_weights().get("cart", {})
        return {r for r, (prio, _w) in got.items() if prio == 0} == {"us-east"} and (
            got.get("us-west", (0, 0))[0] == 1
        )

    wait_for(local_first, 20, "Envoy on local-first after the delete")


DR_CRD = {
    # Istio's DestinationRule CRD, reduced to what an API server needs to store the objects
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "destinationrules.networking.istio.io"},
    "spec": {
        "group": "networking.istio.io",
        "names": {"kind": "DestinationRule", "plural": "destinationrules", "singular": "dr"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}
RULES = "/apis/networking.istio.io/v1beta1/namespaces/shop/destinationrules"


def test_destination_rule_output_writes_rules_and_removes_them_on_delete(world: World) -> None:
    """spec.output: destinationRule, with the operator holding only deploy/rbac.yaml's rights:
    the leader writes one DestinationRule per routed service (localityLbSetting.distribute
    summing to 100 per source locality), and deleting the policy removes them (finalizer)."""
    done = world.kube.kubectl("apply", "-f", "-", input=json.dumps(DR_CRD))
    assert done.returncode == 0, done.stderr
    wait_for(lambda: _lists(world, RULES), 30, "the DestinationRule CRD served")
    assert world.leader() is not None
    apply_policy(world, output="destinationRule")

    def rules() -> list[dict[str, Any]]:
        return list(world.kube.request("GET", RULES)["items"])

    got = wait_for(
        lambda: [r for r in rules() if r["metadata"]["name"] == "slate-shop-cart"], 30, "a rule"
    )
    spec = got[0]["spec"]
    assert spec["host"].startswith("cart")
    lb = spec["trafficPolicy"]["loadBalancer"]["localityLbSetting"]
    for d in lb["distribute"]:
        assert sum(d["to"].values()) == 100, d
    assert world.policy()["metadata"].get("finalizers"), "no finalizer for the rules"
    done = world.kube.kubectl("delete", "tp", "shop", "-n", "shop", "--wait=true", "--timeout=30s")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: not rules(), 20, "DestinationRules removed")


def _lists(world: World, path: str) -> bool:
    try:
        world.kube.request("GET", path)
    except urllib.error.HTTPError:
        return False
    return True
