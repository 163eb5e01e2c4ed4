"""Subscriptions as the xDS protocol document defines them, one table row per rule.

Each row is a sequence of steps on one stream: a request (SotW: the full name list; delta:
subscribe / unsubscribe), `update` (the routing changes, every resource gets a new version), or
`stale` (a SotW request answering the response before the latest). Every request after the first
carries the nonce of the latest response (an ACK) unless it is `stale`. Checked: what the last
step makes the server send (names of resources, removed names) and the wildcard state.
The rows marked (fixed) differed from the document before (go-control-plane's
`pkg/server/stream/v3/subscription.go` follows the same rules).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_xds_cli import ROUTES, write_endpoints
from xds_testlib import delta, endpoints, node, parse_delta, parse_sotw, sotw, split_routing

from slate.xds.cache import XdsCache
from slate.xds.protocol import ADS, DeltaStream, Outgoing, SotwStream
from slate.xds.views import plain_envoy_view

EPS = endpoints({"cart": {"us-west": 2, "us-east": 1}, "ads": {"us-west": 1}})


@dataclass(frozen=True)
class Step:
    names: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    update: bool = False
    stale: bool = False


def req(*names: str) -> Step:
    return Step(names=names)


def unsub(*names: str) -> Step:
    return Step(unsubscribe=names)


UPDATE = Step(update=True)


@dataclass(frozen=True)
class Row:
    rule: str
    mode: str
    steps: tuple[Step, ...]
    sent: frozenset[str] | None
    """Resource names in what the last step makes the server send (None: nothing sent)."""
    wildcard: bool
    removed: frozenset[str] = field(default_factory=frozenset)


ROWS = [
    Row(
        "sotw: an empty first request is a (legacy) wildcard",
        "sotw",
        (req(),),
        frozenset({"ads", "cart"}),
        True,
    ),
    Row(
        "sotw: legacy wildcard lasts while requests stay empty",
        "sotw",
        (req(), req(), UPDATE),
        frozenset({"cart"}),
        True,
    ),
    Row(
        "sotw: names end the legacy wildcard",
        "sotw",
        (req(), req("cart"), UPDATE),
        frozenset({"cart"}),
        False,
    ),
    Row(
        "sotw: [] after names subscribes to nothing",
        "sotw",
        (req("cart"), req(), UPDATE),
        None,
        False,
    ),
    Row(
        "sotw (fixed): ['*'] then [] subscribes to nothing",
        "sotw",
        (req("*"), req(), UPDATE),
        None,
        False,
    ),
    Row(
        "sotw: ['*', name] keeps the wildcard",
        "sotw",
        (req("*", "cart"), UPDATE),
        frozenset({"cart"}),
        True,
    ),
    Row(
        "sotw (fixed): a request with a stale nonce is ignored",
        "sotw",
        (req("cart"), UPDATE, Step(names=("cart", "ads"), stale=True)),
        None,
        False,
    ),
    Row(
        "delta: an empty first subscribe is a (legacy) wildcard",
        "delta",
        (req(),),
        frozenset({"ads", "cart"}),
        True,
    ),
    Row(
        "delta: subscribing a name keeps the wildcard",
        "delta",
        (req(), req("cart"), UPDATE),
        frozenset({"cart"}),
        True,
    ),
    Row(
        "delta: unsubscribing '*' after a name ends the wildcard",
        "delta",
        (req(), req("cart"), unsub("*"), UPDATE),
        frozenset({"cart"}),
        False,
    ),
    Row(
        "delta (fixed): in legacy wildcard only a subscription changes anything",
        "delta",
        (req(), unsub("*"), UPDATE),
        frozenset({"cart"}),
        True,
    ),
    Row(
        "delta (fixed): unsubscribing a name under the wildcard re-sends it",
        "delta",
        (req("*", "cart"), unsub("cart")),
        frozenset({"cart"}),
        True,
    ),
    Row(
        "delta (fixed): ... or says it is gone if it does not exist",
        "delta",
        (req("*", "nosuch"), unsub("nosuch")),
        frozenset(),
        True,
        frozenset({"nosuch"}),
    ),
    Row(
        "delta: unsubscribing a plain name sends nothing",
        "delta",
        (req("cart"), unsub("cart"), UPDATE),
        None,
        False,
    ),
]


def run(row: Row) -> tuple[Any, Outgoing | None]:
    c = XdsCache(split_routing({"us-west": 0.8, "us-east": 0.2}, {"us-east": 1.0}), EPS)
    stream: Any = (SotwStream if row.mode == "sotw" else DeltaStream)(c, plain_envoy_view, api=ADS)
    nonces: list[str] = []
    share = 0.8
    last: Outgoing | None = None
    for i, step in enumerate(row.steps):
        if step.update:
            share /= 2
            c.set_routing(split_routing({"us-west": share, "us-east": 1 - share}, {"us-east": 1.0}))
        else:
            first = {"with_node": node()} if i == 0 else {}
            nonce = (nonces[-2] if step.stale else nonces[-1]) if nonces else ""
            if row.mode == "sotw":
                stream.on_request(sotw(list(step.names), nonce=nonce, **first))
            else:
                stream.on_request(
                    delta(list(step.names), list(step.unsubscribe), nonce=nonce, **first)
                )
        last = stream.next_response()
        if last is not None:
            nonces.append(last.nonce)
    return stream, last


@pytest.mark.parametrize("row", ROWS, ids=[r.rule for r in ROWS])
def test_subscription_rule(row: Row) -> None:
    stream, out = run(row)
    assert stream.wildcard == row.wildcard
    if row.sent is None:
        assert out is None, out
        return
    assert out is not None
    if row.mode == "sotw":
        assert set(parse_sotw(out.payload)[1]) == row.sent
    else:
        resp, got = parse_delta(out.payload)
        assert set(got) == row.sent
        assert set(resp.removed_resources) == row.removed


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_on_ipv6_loopback(tmp_path: Path) -> None:
    """`--host ::1` binds (it was refused: `::1:18000` is not an address gRPC can parse)."""
    routes, eps = tmp_path / "routes.json", tmp_path / "endpoints.yaml"
    routes.write_text(json.dumps(ROUTES))
    write_endpoints(eps, {"us-west": ["[::1]:8080"]})
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "slate.cli", "xds", "serve", "--routes", str(routes)),
            *("--endpoints", str(eps), "--host", "::1", "--port", "0", "--metrics-port", "0"),
            *("--metrics-host", "::1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("slate xds: serving on [::1]:"), (line, proc.stderr)
        address, metrics = line.split()[4], line.split()[7]
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            got = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert got.status == health_pb2.HealthCheckResponse.SERVING
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
            assert b"slate_xds_streams" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
