"""docs/operator.md's spec-field reference is generated from the CRD's schema, and must match it.

Regenerate after changing crds/trafficpolicy.yaml:  python tests/operator/test_docs_reference.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from crd_cases import spec_schema

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operator.md"
BEGIN = "<!-- spec-reference: generated from crds/trafficpolicy.yaml; do not edit -->"
END = "<!-- end spec-reference -->"


def _rules(n: dict[str, Any]) -> str:
    r = []
    if "enum" in n:
        r.append("one of " + ", ".join(f"`{e}`" for e in n["enum"]))
    if "minimum" in n:
        r.append((">" if n.get("exclusiveMinimum") else ">=") + f" {n['minimum']}")
    if "maximum" in n:
        r.append(("<" if n.get("exclusiveMaximum") else "<=") + f" {n['maximum']}")
    if "minItems" in n or "maxItems" in n:
        r.append(f"{n.get('minItems', 0)}..{n.get('maxItems', '')} items")
    if "minLength" in n or "maxLength" in n:
        r.append(f"length {n.get('minLength', 0)}..{n.get('maxLength', '')}")
    if "pattern" in n:
        r.append(f"pattern `{n['pattern']}`")
    if n.get("x-kubernetes-list-map-keys"):
        r.append("unique by " + " + ".join(n["x-kubernetes-list-map-keys"]))
    if "minProperties" in n:
        r.append(f"at least {n['minProperties']} field")
    return "; ".join(r)


def _default(n: dict[str, Any]) -> str:
    if "default" not in n:
        return ""
    d = n["default"]
    return f"`{str(d).lower() if isinstance(d, bool) else d}`"


def reference_table() -> str:
    rows = [
        "| Field | Type | Required | Default | Schema rules | Meaning |",
        "|---|---|---|---|---|---|",
    ]

    def walk(node: dict[str, Any], path: str, required: bool) -> None:
        kind = node.get("type", "")
        if kind == "array":
            kind = f"list of {node['items'].get('type')}"
        meaning = " ".join(str(node.get("description", "")).split())
        rows.append(
            f"| `{path}` | {kind} | {'yes' if required else ''} | {_default(node)} | "
            f"{_rules(node)} | {meaning} |"
        )
        req = set(node.get("required", []))
        for k, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{k}", k in req)
        if "items" in node:
            item = node["items"]
            req_i = set(item.get("required", []))
            for k, sub in item.get("properties", {}).items():
                walk(sub, f"{path}[].{k}", k in req_i)

    walk(spec_schema()["properties"]["spec"], "spec", True)
    return "\n".join(rows)


def _section(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].strip()


def test_docs_reference_matches_the_crd() -> None:
    assert _section(DOC.read_text()) == reference_table(), (
        "docs/operator.md is out of date: python tests/operator/test_docs_reference.py"
    )


def test_every_contract_field_is_in_the_reference() -> None:
    table = reference_table()
    for field in [
        "spec.clusters[].name", "spec.clusters[].region", "spec.services[].port",
        "spec.services[].endpoints[].match.pathPrefix", "spec.network.rtt[].ms",
        "spec.network.egress.defaultUsdPerGb", "spec.network.egress.prices[].usdPerGb",
        "spec.objective.costWeightMsPerUsdHour", "spec.objective.maxUtilization",
        "spec.rollout.interval", "spec.rollout.maxShiftPerInterval", "spec.rollout.minLocalShare",
        "spec.telemetry.prometheusUrl", "spec.telemetry.window", "spec.telemetry.endpointLabel",
        "spec.output", "spec.paused",
    ]:  # fmt: skip
        assert f"| `{field}` |" in table, field


if __name__ == "__main__":
    text = DOC.read_text()
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    DOC.write_text(text[:start] + "\n" + reference_table() + "\n" + text[end:])
    print(f"wrote {DOC}", file=sys.stderr)
