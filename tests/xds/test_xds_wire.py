"""Responses joined from pre-serialised pieces parse as the ordinary messages."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from slate.xds import wire
from slate.xds.resources import CLA_TYPE_URL


def _cla(name: str, n_endpoints: int) -> bytes:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    loc = cla.endpoints.add()
    loc.locality.region = "us-west"
    for i in range(n_endpoints):
        sa = loc.lb_endpoints.add().endpoint.address.socket_address
        sa.address, sa.port_value = f"10.0.{i // 250}.{i % 250}", 8080
    return bytes(cla.SerializeToString())


def test_any_matches_protobuf() -> None:
    value = _cla("a", 3)
    expected = any_pb2.Any(type_url=CLA_TYPE_URL, value=value).SerializeToString()
    assert wire.any_message(CLA_TYPE_URL, value) == expected


def test_sotw_body_with_nonce_parses() -> None:
    # A large CLA exercises multi-byte length varints.
    small, big = _cla("a", 1), _cla("b", 2000)
    assert len(big) > 16384
    body = wire.sotw_body(
        "v1", CLA_TYPE_URL, [wire.any_message(CLA_TYPE_URL, x) for x in (small, big)]
    )
    resp = discovery_pb2.DiscoveryResponse.FromString(wire.with_nonce(body, "42"))
    assert resp.version_info == "v1"
    assert resp.type_url == CLA_TYPE_URL
    assert resp.nonce == "42"
    assert [r.value for r in resp.resources] == [small, big]


def test_delta_body_with_nonce_parses() -> None:
    value = _cla("a", 2)
    res = wire.delta_resource("a", "ver", wire.any_message(CLA_TYPE_URL, value))
    body = wire.delta_body(CLA_TYPE_URL, [res], ["gone", "also-gone"], "sys")
    resp = discovery_pb2.DeltaDiscoveryResponse.FromString(wire.with_nonce(body, "7"))
    assert resp.nonce == "7"
    assert resp.system_version_info == "sys"
    assert list(resp.removed_resources) == ["gone", "also-gone"]
    assert [(r.name, r.version, r.resource.value) for r in resp.resources] == [("a", "ver", value)]


def test_nonce_of_any_length_parses() -> None:
    body = wire.sotw_body("v", CLA_TYPE_URL, [])
    for nonce in ("", "7", "x" * 127, "y" * 128, "z" * 300):
        resp = discovery_pb2.DiscoveryResponse.FromString(wire.with_nonce(body, nonce))
        assert resp.nonce == nonce and resp.version_info == "v"
