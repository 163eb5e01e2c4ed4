"""The files in examples/xds stay valid: slate parses them and Envoy accepts the bootstrap."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from envoy_harness import ENVOY

from slate.model.routing import load_routing
from slate.xds.cache import XdsCache
from slate.xds.endpoints import load_endpoints
from slate.xds.security import load_identity_table
from slate.xds.views import ViewKey

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "xds"


def test_example_routes_and_endpoints_serve_the_documented_weights() -> None:
    cache = XdsCache(
        load_routing(EXAMPLES / "routes.json"), load_endpoints(EXAMPLES / "endpoints.yaml")
    )
    res = cache.resource(ViewKey("frontend", "us-west"), "productcatalog.list")
    assert res is not None
    weights = {
        loc.locality.region: loc.load_balancing_weight.value for loc in res.message().endpoints
    }
    assert weights == {"us-west": 8000, "us-east": 2000}


@pytest.mark.skipif(ENVOY is None, reason="the envoy binary is not installed")
def test_example_bootstrap_is_accepted_by_envoy() -> None:
    assert ENVOY is not None
    done = subprocess.run(
        [
            ENVOY,
            "--mode",
            "validate",
            "-c",
            str(EXAMPLES / "envoy-frontend-us-west.yaml"),
            "--use-dynamic-base-id",
            "-l",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_identity_table_and_grpc_bootstrap_parse() -> None:
    table = load_identity_table(EXAMPLES / "identity-table.yaml")
    assert table.trust_domain == "cluster.local"
    assert table.services[("shop", "frontend")] == {"frontend"}
    boot = json.loads((EXAMPLES / "grpc-bootstrap-frontend-us-west.json").read_text())
    node = boot["node"]
    assert (node["cluster"], node["locality"]["region"]) == ("frontend", "us-west")
    eps = load_endpoints(EXAMPLES / "endpoints.yaml")
    assert set(eps.matches["productcatalog"]) == {"list", "get"}
