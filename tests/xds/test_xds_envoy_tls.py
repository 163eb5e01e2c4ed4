"""A real Envoy reaches slate's xDS port over mTLS, as a sidecar with an Istio-style identity would.

The gRPC-client tests (test_xds_security.py) cover the server's TLS rules; this one checks that a
real Envoy's TLS stack (ALPN, SAN checks, client certificates) interoperates with them: the allowed
identity gets its weights and traffic follows them; an identity the table does not allow for its
view gets nothing and the refusal is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import OPENSSL, make_ca, make_cert
from envoy_harness import (
    EnvoyFactory,
    ServerThread,
    TlsClient,
    Transport,
    Upstreams,
    assert_split,
    upstream_endpoints,
    wait_until,
)
from xds_testlib import split_routing

from slate.xds.cache import XdsCache
from slate.xds.metrics import XdsMetrics
from slate.xds.security import Authorizer, TlsFiles, identity_table_from_data, server_credentials

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command"),
]

WEST = {"us-west": 0.8, "us-east": 0.2}
EAST = {"us-west": 0.3, "us-east": 0.7}
N = 1000
TABLE = identity_table_from_data(
    {
        "trust_domain": "cluster.local",
        "identities": [
            {"namespace": "shop", "service_account": "frontend", "services": ["frontend"]}
        ],
    }
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_cert(d, "server", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "frontend", "URI:spiffe://cluster.local/ns/shop/sa/frontend")
    make_cert(d, "cartsa", "URI:spiffe://cluster.local/ns/shop/sa/cart")
    return d


@pytest.fixture
def mtls_server(certs: Path, upstreams: Upstreams) -> Iterator[ServerThread]:
    """slate's xDS server with mTLS and the identity table, on its own loop thread."""
    metrics = XdsMetrics()
    files = TlsFiles(certs / "server.crt", certs / "server.key", certs / "ca.crt")
    thread = ServerThread(
        XdsCache(split_routing(WEST, EAST, to="cart"), upstream_endpoints(upstreams))
    )
    try:
        thread.start(
            metrics=metrics,
            credentials=server_credentials(files, metrics),
            authorizer=Authorizer(TABLE, metrics),
        )
        yield thread
    finally:
        thread.close()


def _refused(server: ServerThread, reason: str) -> float:
    assert server.server is not None
    got = server.server.metrics.registry.get_sample_value(
        "slate_xds_refused_total", {"reason": reason}
    )
    return got or 0.0


@pytest.mark.parametrize(
    "transport", [Transport("ads", "sotw"), Transport("ads", "delta")], ids=str
)
def test_envoy_over_mtls_gets_its_weights_and_traffic_follows(
    transport: Transport, certs: Path, mtls_server: ServerThread, envoys: EnvoyFactory
) -> None:
    tls = TlsClient(certs / "ca.crt", certs / "frontend.crt", certs / "frontend.key")
    west = envoys(
        "west-mtls", region="us-west", xds_port=mtls_server.port, transport=transport, tls=tls
    )
    wait_until(
        lambda: west.eds_weights().get("cart", {}).get("us-west") == (0, 8000),
        10,
        what="the weights over mTLS",
    )
    assert_split(west.split("cart", N), WEST, N)
    assert west.stat("cluster.slate_xds.ssl.handshake") >= 1


def test_envoy_whose_identity_may_not_read_the_view_gets_nothing(
    certs: Path, mtls_server: ServerThread, envoys: EnvoyFactory
) -> None:
    """A service account of this mesh that the table does not list, connecting as a `frontend`
    proxy: the TLS handshake succeeds (same CA), the stream is refused as `unknown_identity` (it
    was once miscounted as `untrusted_domain`), and Envoy gets no endpoints for `cart`."""
    tls = TlsClient(certs / "ca.crt", certs / "cartsa.crt", certs / "cartsa.key")
    envoy = envoys(
        "west-wrong-identity",
        region="us-west",
        xds_port=mtls_server.port,
        transport=Transport("ads", "sotw"),
        tls=tls,
        initial_fetch_timeout_s=0.5,
    )
    wait_until(lambda: _refused(mtls_server, "unknown_identity") >= 1, 10, what="a refusal")
    time.sleep(0.3)
    assert envoy.stat("cluster.slate_xds.ssl.handshake") >= 1
    assert _refused(mtls_server, "untrusted_domain") == 0
    assert not envoy.eds_weights().get("cart")
