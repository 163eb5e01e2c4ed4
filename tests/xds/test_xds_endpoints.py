"""ENDPOINTS.yaml parsing (errors name the field) and the static source's reloads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from slate.model.errors import InputError
from slate.xds.endpoints import (
    Endpoint,
    StaticEndpointSource,
    endpoints_from_data,
    load_endpoints,
    parse_endpoint,
)


def test_parse_valid_file(tmp_path: Path) -> None:
    f = tmp_path / "e.yaml"
    f.write_text(
        "services:\n"
        "  cart:\n"
        "    clusters:\n"
        "      us-west: ['10.0.0.1:8080', '[fd00::1]:9090']\n"
        "      us-east: []\n"
        "rtt_ms:\n"
        "  us-west: {us-east: 62}\n"
    )
    e = load_endpoints(f)
    assert e.clusters_of("cart") == {
        "us-west": (Endpoint("10.0.0.1", 8080), Endpoint("fd00::1", 9090)),
        "us-east": (),
    }
    assert e.clusters_of("nope") is None
    assert e.rtt("us-east", "us-west") == 62
    assert e.rtt("us-west", "us-west") == 0
    assert e.rtt("us-west", "eu") is None
    assert str(Endpoint("fd00::1", 9090)) == "[fd00::1]:9090"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ([], ""),
        ({}, "services"),
        ({"services": {"cart": {}}}, "services.cart.clusters"),
        ({"services": {"cart": {"clusters": {"w": "10.0.0.1:1"}}}}, "services.cart.clusters.w"),
        ({"services": {"cart": {"clusters": {"w": ["10.0.0.1"]}}}}, "services.cart.clusters.w[0]"),
        ({"services": {"cart": {"clusters": {"w": ["x:80"]}}}}, "services.cart.clusters.w[0]"),
        (
            {"services": {"cart": {"clusters": {"w": ["10.0.0.1:0"]}}}},
            "services.cart.clusters.w[0]",
        ),
        (
            {"services": {"cart": {"clusters": {"w": ["10.0.0.1:1", "10.0.0.1:1"]}}}},
            "services.cart.clusters.w",
        ),
        ({"services": {"a.b": {"clusters": {}}}}, "services.a.b"),
        ({"services": {}, "rtt_ms": {"a": {"b": -1}}}, "rtt_ms.a.b"),
        ({"services": {}, "rtt_ms": {"a": 3}}, "rtt_ms.a"),
        ({"services": {}, "rtt_ms": {"a": {"b": 1e9}}}, "rtt_ms.a.b"),
        ({"services": {}, "rtt_ms": {"a": {"b": 1e-300}}}, "rtt_ms.a.b"),
        ({"services": {}, "rtt_ms": {"a": {"b": True}}}, "rtt_ms.a.b"),
    ],
)
def test_errors_name_the_field(data: object, path: str) -> None:
    with pytest.raises(InputError) as err:
        endpoints_from_data(data)
    assert err.value.path == path


def test_parse_endpoint_accepts_ipv4_and_bracketed_ipv6() -> None:
    assert parse_endpoint("127.0.0.1:80", "x") == Endpoint("127.0.0.1", 80)
    assert parse_endpoint("[::1]:80", "x") == Endpoint("::1", 80)
    with pytest.raises(InputError):
        parse_endpoint("localhost:80", "x")
    with pytest.raises(InputError):
        parse_endpoint("127.0.0.1:65536", "x")


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_endpoints(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [\n")
    with pytest.raises(InputError, match="not valid YAML") as err:
        load_endpoints(bad)
    assert err.value.source == str(bad)


def test_static_source_reloads_and_keeps_last_good(tmp_path: Path) -> None:
    f = tmp_path / "e.yaml"
    f.write_text("services: {cart: {clusters: {w: ['10.0.0.1:80']}}}\n")
    rejected: list[str] = []
    source = StaticEndpointSource(f, poll_interval=0.01, on_reject=rejected.append)
    assert source.current().clusters_of("cart") == {"w": (Endpoint("10.0.0.1", 80),)}

    async def scenario() -> None:
        updates = source.updates()
        assert isinstance(updates, AsyncGenerator)
        # A bad edit is skipped (and reported); the next good one comes through.
        f.write_text("services: {cart: {clusters: {w: ['nope']}}}\n")
        os.utime(f, ns=(1, 1))
        first = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0.1)
        assert not first.done()
        f.write_text("services: {cart: {clusters: {w: ['10.0.0.2:80']}}}\n")
        got = await asyncio.wait_for(first, 5)
        assert got.clusters_of("cart") == {"w": (Endpoint("10.0.0.2", 80),)}
        await updates.aclose()

    asyncio.run(scenario())
    assert len(rejected) == 1 and "services.cart.clusters.w[0]" in rejected[0]
    assert source.current().clusters_of("cart") == {"w": (Endpoint("10.0.0.2", 80),)}
