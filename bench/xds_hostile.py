"""Hostile-but-fair clients against `slate xds serve`: what one bad request costs everyone else.

    .venv/bin/python bench/xds_hostile.py [--before REV] [--names 150000] [--skip-before]

Runs the same cases against two servers started one after the other in this run: the code at
`--before` (default: the commit before the limits landed; extracted with `git archive` into a temp
directory) and this checkout. Each server is `slate xds serve` in its own process with default
flags, a small mesh (one service in three clusters), and this process as the clients. For every
case it prints: the status the hostile stream got, the bytes of the reply, the longest gap another
client saw (a gRPC health check every 5 ms on its own connection: the event loop is shared, so this
is the stall every other stream suffers), the server's RSS before, at peak and 2 s after the
hostile streams ended, and for the metrics case the size of /metrics. Figures only: the machine is
shared, so compare the two columns of the same run.

Cases (from the reviewer's report in issue 8):
  * sotw-unknown: one SotW ADS request naming N unknown resources (N=150,000 is ~2.85 MB),
  * delta-unknown: the same as a delta subscribe,
  * six-sotw: six of those at once,
  * sotw-at-cap: 10,000 unknown names (under the default cap: the cost of a request we accept),
  * sotw-known-at-cap: 10,000 names of endpoint classes of a real service (10,000 CLAs built),
  * long-nodes: 50 streams whose node.cluster is 2 KB of junk (the /metrics size, live and after),
  * gauge: a stream identified then refused for its type (slate_xds_streams must not go below 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
BEFORE = "0d0aadf"  # h/xds before bounded cost: subscriptions fixed, no limits
ROUTES = {
    "routes": [
        {
            "from_service": "frontend",
            "from_cluster": "us-west",
            "to": "cart",
            "weights": {"us-west": 0.6, "us-east": 0.3, "eu": 0.1},
        }
    ]
}
ENDPOINTS = """services:
  cart:
    clusters:
      us-west: ["10.0.0.1:80", "10.0.0.2:80"]
      us-east: ["10.0.1.1:80"]
      eu: ["10.0.2.1:80"]
"""


class Server:
    def __init__(self, code: Path, workdir: Path, extra: list[str]) -> None:
        (workdir / "routes.json").write_text(json.dumps(ROUTES))
        (workdir / "endpoints.yaml").write_text(ENDPOINTS)
        env = dict(os.environ, PYTHONPATH=str(code))
        cmd = [sys.executable, "-m", "slate.cli", "xds", "serve"]
        cmd += ["--routes", str(workdir / "routes.json")]
        cmd += ["--endpoints", str(workdir / "endpoints.yaml")]
        cmd += ["--port", "0", "--metrics-port", "0", *extra]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=code
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("slate xds: serving on"):
            raise SystemExit(f"server did not start: {line!r}")
        words = line.split()
        self.address, self.metrics = words[4], words[7]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextlib.contextmanager
def peak_rss(server: Server) -> Iterator[list[float]]:
    peak = [server.rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], server.rss_mb())
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        done.set()
        t.join()


class Prober:
    """Health checks every 5 ms on a separate connection; the longest round trip is the stall."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.worst = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            while not self._stop.is_set():
                t = time.perf_counter()
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
                self.worst = max(self.worst, time.perf_counter() - t)
                await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()


def node(cluster: str = "frontend", node_id: str = "hostile") -> Any:
    n = base_pb2.Node(id=node_id, cluster=cluster)
    n.locality.region = "us-west"
    return n


def unknown_names(n: int, tag: str = "") -> list[str]:
    return [f"svc{tag}-{i:07d}.ep" for i in range(n)]


def known_names(n: int, tag: str = "") -> list[str]:
    """Endpoint classes of a service that exists: each is a real CLA the server must build."""
    return [f"cart.e{tag}{i:06d}" for i in range(n)]


async def hostile_call(channel: Any, mode: str, names: list[str]) -> tuple[str, int]:
    """(status, reply bytes) of one stream sending one request and reading for 3 s."""
    if mode == "sotw":
        method, req = (
            "StreamAggregatedResources",
            discovery_pb2.DiscoveryRequest(node=node(), type_url=CLA, resource_names=names),
        )
    else:
        method, req = (
            "DeltaAggregatedResources",
            discovery_pb2.DeltaDiscoveryRequest(
                node=node(), type_url=CLA, resource_names_subscribe=names
            ),
        )
    call = channel.stream_stream(
        ADS + method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=None
    )()
    await call.write(req)
    got = 0
    status = "OK (open)"
    try:
        # Read until 2 s pass without a response (the first may take long: that is the stall).
        deadline = 60.0
        while True:
            msg = await asyncio.wait_for(call.read(), timeout=deadline)
            if msg is grpc.aio.EOF:
                break
            got += len(msg)
            deadline = 2.0
    except TimeoutError:
        pass
    except grpc.aio.AioRpcError as e:
        status = e.code().name
    call.cancel()
    with contextlib.suppress(Exception):
        code = await call.code()
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            status = code.name
    return status, got


async def case_unknown(
    server: Server, mode: str, n_names: int, copies: int, known: bool = False
) -> dict[str, Any]:
    before = server.rss_mb()
    prober = Prober(server.address)
    probe = asyncio.create_task(prober.run())
    await asyncio.sleep(0.2)
    make = known_names if known else unknown_names
    names = [make(n_names, str(i)) for i in range(copies)]
    opts = [("grpc.max_receive_message_length", 256 << 20)]
    with peak_rss(server) as peak:
        async with grpc.aio.insecure_channel(server.address, options=opts) as ch:
            results = await asyncio.gather(*(hostile_call(ch, mode, ns) for ns in names))
        await asyncio.sleep(0.5)
        prober.stop()
        await probe
    await asyncio.sleep(2.0)
    size = len(names[0][0]) + 2
    return {
        "request_mb": round(n_names * size / 1e6, 2),
        "status": results[0][0],
        "reply_mb": round(results[0][1] / 1e6, 2),
        "stall_ms": round(prober.worst * 1000, 1),
        "rss_before_mb": round(before),
        "rss_peak_mb": round(peak[0]),
        "rss_after_mb": round(server.rss_mb()),
    }


async def case_long_nodes(server: Server, n: int = 50, size: int = 2048) -> dict[str, Any]:
    base = len(server.metrics_text())
    async with grpc.aio.insecure_channel(server.address) as ch:
        calls = []
        for i in range(n):
            call = ch.stream_stream(
                ADS + "StreamAggregatedResources",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=None,
            )()
            junk = f"{i:03d}" + "x" * size
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    node=node(cluster=junk, node_id=junk), type_url=CLA, resource_names=["cart"]
                )
            )
            calls.append(call)
        await asyncio.sleep(1.0)
        live = len(server.metrics_text())
        for call in calls:
            call.cancel()
    await asyncio.sleep(1.0)
    return {
        "metrics_kb_base": base // 1024,
        "metrics_kb_live": live // 1024,
        "metrics_kb_after": len(server.metrics_text()) // 1024,
    }


async def case_gauge(server: Server) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        for _ in range(5):
            call = ch.stream_stream(
                ADS + "StreamAggregatedResources",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=None,
            )()
            await call.write(
                discovery_pb2.DiscoveryRequest(node=node(), type_url="type.example/Nope")
            )
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.read()
            call.cancel()
    await asyncio.sleep(0.5)
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in server.metrics_text().splitlines()
        if line.startswith("slate_xds_streams{")
    ]
    return {"streams_gauge_min": min(values) if values else 0.0}


async def run_all(server: Server, n_names: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    out["sotw-unknown"] = await case_unknown(server, "sotw", n_names, 1)
    out["delta-unknown"] = await case_unknown(server, "delta", n_names, 1)
    out["six-sotw"] = await case_unknown(server, "sotw", n_names, 6)
    out["sotw-at-cap"] = await case_unknown(server, "sotw", 10_000, 1)
    out["sotw-known-at-cap"] = await case_unknown(server, "sotw", 10_000, 1, known=True)
    out["long-nodes"] = await case_long_nodes(server)
    out["gauge"] = await case_gauge(server)
    return out


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "slate"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", default=BEFORE, help=f"git revision to compare with ({BEFORE})")
    p.add_argument("--skip-before", action="store_true")
    p.add_argument("--names", type=int, default=150_000)
    args = p.parse_args()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        versions = [] if args.skip_before else [("before", extract(args.before, Path(tmp)))]
        versions.append(("after", ROOT))
        for label, code in versions:
            work = Path(tempfile.mkdtemp(dir=tmp))
            server = Server(code, work, [])
            print(f"== {label} ({code})", file=sys.stderr, flush=True)
            try:
                results[label] = asyncio.run(run_all(server, args.names))
            finally:
                server.stop()
    print("machine: shared 2 cores (other sessions running); compare columns of the same run")
    cases = list(results["after"])
    for case in cases:
        print(f"\n{case}")
        keys = list(results["after"][case])
        for k in keys:
            row = [f"{label}={results[label][case].get(k)}" for label in results]
            print(f"  {k:18s} " + "  ".join(row))


if __name__ == "__main__":
    main()
