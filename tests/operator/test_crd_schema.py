"""The CRD's structural schema and slate/model/policy.py agree (no API server needed).

For every example and every manifest `crd_cases.mutations` derives from the schema: what the schema
rejects, policy.py rejects too; what the schema accepts, policy.py accepts unless one of the
cross-field rules (the webhook's, `cross_field_problems`) fails. The same cases go to a real
kube-apiserver in test_kube_crd.py, which shows the local schema check matches the server's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_cases import EXAMPLES, crd, full_manifest, mutations, schema_errors, spec_schema

from slate.model.errors import InputError
from slate.model.policy import (
    MAX_CLUSTERS,
    MAX_ENDPOINTS,
    MAX_PAIRS,
    MAX_SERVICES,
    cross_field_problems,
    policy_from_manifest,
)

CASES = list(mutations(full_manifest()))


def policy_verdict(doc: Any) -> InputError | None:
    try:
        policy_from_manifest(doc)
    except InputError as e:
        return e
    return None


def test_crd_shape() -> None:
    doc = crd()
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == "trafficpolicies.slate.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrafficPolicy",
        "trafficpolicies",
        ["tp"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Predicted latency (ms)", "Egress ($/h)", "Last solve", "Age"]


def test_bounds_match_policy_module() -> None:
    spec = spec_schema()["properties"]["spec"]["properties"]
    assert spec["clusters"]["maxItems"] == MAX_CLUSTERS
    assert spec["services"]["maxItems"] == MAX_SERVICES
    assert spec["services"]["items"]["properties"]["endpoints"]["maxItems"] == MAX_ENDPOINTS
    assert spec["network"]["properties"]["rtt"]["maxItems"] == MAX_PAIRS


def test_every_schema_node_is_structural() -> None:
    """Structural: every node states its type (or preserves unknown fields)."""

    def walk(node: dict[str, Any], where: str) -> None:
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), where
        for k, sub in node.get("properties", {}).items():
            walk(sub, f"{where}.{k}")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    walk(spec_schema(), "")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_both(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert schema_errors(doc) == []
    assert policy_verdict(doc) is None


def test_cases_cover_the_schema() -> None:
    """The generator reaches every spec field with constraints (a guard against a silent walk)."""
    labels = {label.split(":")[0] for label, _ in CASES}
    for field in [
        "spec.clusters[0].name",
        "spec.clusters[0].region",
        "spec.services[0].port",
        "spec.services[0].endpoints[0].match.method",
        "spec.services[0].endpoints[0].match.pathPrefix",
        "spec.network.rtt[0].ms",
        "spec.network.egress.defaultUsdPerGb",
        "spec.network.egress.prices[0].usdPerGb",
        "spec.objective.maxUtilization",
        "spec.rollout.interval",
        "spec.rollout.minLocalShare",
        "spec.telemetry.window",
        "spec.telemetry.endpointLabel",
        "spec.telemetry.prometheusUrl",
        "spec.output",
        "spec.paused",
    ]:
        assert field in labels, field
    rejected = sum(1 for _, doc in CASES if schema_errors(doc))
    assert len(CASES) > 250 and 150 < rejected < len(CASES)


@pytest.mark.parametrize(("label", "doc"), CASES, ids=[c[0] for c in CASES])
def test_schema_and_policy_agree(label: str, doc: dict[str, Any]) -> None:
    by_schema = schema_errors(doc)
    by_policy = policy_verdict(doc)
    if by_schema:
        assert by_policy is not None, f"schema rejects ({by_schema[0]}), policy.py accepts"
        return
    if by_policy is None:
        return
    # The schema accepts it: policy.py may only reject it for a cross-field rule.
    cross = cross_field_problems(doc["spec"])
    assert cross, f"policy.py rejects ({by_policy}) what the schema accepts"
    assert by_policy.path == cross[0].path
