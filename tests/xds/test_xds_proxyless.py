"""grpcio's own xDS client (proxyless gRPC) against slate: LDS -> RDS -> CDS -> EDS over one ADS
stream, calling real gRPC servers in three emulated clusters on loopback.

Each client is its own process (`grpc_xds_client.py`: grpcio reads GRPC_XDS_BOOTSTRAP once per
process), dialling `xds:///cart` (or an `xds://AUTHORITY/cart` target, whose resource names are
`xdstp://`); its bootstrap names slate's address and a node like a sidecar's (cluster = source
service, locality.region = source cluster), which chooses its view.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy_harness import ServerThread, XdsFixture, assert_split
from xds_testlib import routing

from slate.xds.endpoints import Endpoint, EndpointSet, RequestMatch

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).with_name("grpc_xds_client.py")
CLUSTERS = ("us-west", "us-east", "eu")
N = 1000


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, int]]:
    """One gRPC server per cluster; `/demo.Cart/Where` and `/demo.Cart/List` answer its cluster."""
    servers, ports = [], {}
    for cluster in CLUSTERS:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def answer(_req: bytes, _ctx: Any, label: str = cluster) -> bytes:
            return label.encode()

        handler = grpc.unary_unary_rpc_method_handler(answer)
        srv.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "demo.Cart", {"Where": handler, "List": handler}
                ),
            )
        )
        ports[cluster] = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        servers.append(srv)
    try:
        yield ports
    finally:
        for srv in servers:
            srv.stop(0)


def cart_endpoints(ports: dict[str, int]) -> EndpointSet:
    return EndpointSet(
        {"cart": {c: (Endpoint("127.0.0.1", p),) for c, p in ports.items()}},
        matches={"cart": {"list": RequestMatch(path_prefix="/demo.Cart/List")}},
    )


def run_client(
    tmp_path: Path,
    server: ServerThread,
    target: str,
    method: str,
    *,
    region: str = "us-west",
    authority: str | None = None,
) -> collections.Counter[str]:
    xds_server = {
        "server_uri": f"127.0.0.1:{server.port}",
        "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"],
    }
    boot: dict[str, Any] = {
        "xds_servers": [xds_server],
        "node": {
            "id": f"proxyless-{region}",
            "cluster": "frontend",
            "locality": {"region": region},
        },
    }
    if authority is not None:
        boot["authorities"] = {
            authority: {
                "client_listener_resource_name_template": (
                    f"xdstp://{authority}/envoy.config.listener.v3.Listener/%s"
                ),
                "xds_servers": [xds_server],
            }
        }
    path = tmp_path / f"bootstrap-{region}-{authority}.json"
    path.write_text(json.dumps(boot))
    env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(path), GRPC_VERBOSITY="ERROR")
    done = subprocess.run(
        [sys.executable, str(CLIENT), target, method, str(N)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return collections.Counter(json.loads(done.stdout)["answers"])


def test_proxyless_client_splits_by_the_weights_per_view_and_endpoint_class(
    upstreams: dict[str, int], xds: XdsFixture, tmp_path: Path
) -> None:
    west = {"us-west": 0.5, "us-east": 0.3, "eu": 0.2}
    east = {"us-east": 0.9, "eu": 0.1}
    server = xds.start(
        routing(
            ("frontend", "us-west", "cart", west),
            ("frontend", "us-east", "cart", east),
            ("frontend", "us-west", "cart.list", {"eu": 1.0}),
        ),
        cart_endpoints(upstreams),
    )
    assert_split(run_client(tmp_path, server, "xds:///cart", "/demo.Cart/Where"), west, N)
    # The endpoint class `list` is matched by path (RDS) and has its own cluster and weights.
    got = run_client(tmp_path, server, "xds:///cart", "/demo.Cart/List")
    assert got == {"eu": N}
    # Another view (node locality us-east) gets its own split.
    assert_split(
        run_client(tmp_path, server, "xds:///cart", "/demo.Cart/Where", region="us-east"), east, N
    )
    # The new weights reach a client that connects after the change.
    moved = {"us-west": 0.2, "eu": 0.8}
    server.call(server.cache.set_routing, routing(("frontend", "us-west", "cart", moved)))
    assert_split(run_client(tmp_path, server, "xds:///cart", "/demo.Cart/Where"), moved, N)


def test_proxyless_client_with_xdstp_names(
    upstreams: dict[str, int], xds: XdsFixture, tmp_path: Path
) -> None:
    """xDS federation: every resource is named `xdstp://slate.test/TYPE/ID` and still resolves
    (the Listener `cart` refers to the RouteConfiguration, Cluster and CLA by xdstp names)."""
    west = {"us-west": 0.7, "us-east": 0.3}
    server = xds.start(routing(("frontend", "us-west", "cart", west)), cart_endpoints(upstreams))
    got = run_client(
        tmp_path, server, "xds://slate.test/cart", "/demo.Cart/Where", authority="slate.test"
    )
    assert_split(got, west, N)
