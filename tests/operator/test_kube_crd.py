"""The CRD on a real kube-apiserver 1.20.

kubectl apply of the CRD and every example, invalid policies rejected naming the field, printer
columns, and the server's verdict on every schema-derived case equal to the local schema check (so
test_crd_schema.py's agreement holds for the real server).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
from typing import Any

import pytest
import yaml
from crd_cases import CRD_PATH, EXAMPLES, full_manifest, mutations, schema_errors
from kube_harness import KubeApi

pytest_plugins = ["kube_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")


def ensure_namespace(kube: KubeApi, name: str) -> None:
    try:
        kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


def dry_run_create(kube: KubeApi, doc: dict[str, Any]) -> str | None:
    """None if the server would accept `doc`, else its message."""
    ns = doc["metadata"].get("namespace", "default")
    path = f"/apis/slate.dev/v1alpha1/namespaces/{ns}/trafficpolicies?dryRun=All"
    try:
        kube.request("POST", path, doc)
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
        if e.code != 422:
            raise AssertionError(f"unexpected HTTP {e.code}: {body}") from None
        return str(body.get("message"))
    return None


@needs_kubectl
def test_kubectl_applies_crd_and_examples(kube: KubeApi) -> None:
    done = kube.kubectl("apply", "-f", str(CRD_PATH))
    assert done.returncode == 0, done.stderr
    for path in EXAMPLES:
        ns = yaml.safe_load(path.read_text())["metadata"].get("namespace", "default")
        ensure_namespace(kube, ns)
        done = kube.kubectl("apply", "-f", str(path))
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
        assert "trafficpolicy.slate.dev/" in done.stdout
    got = kube.kubectl("get", "tp", "-A")
    assert got.returncode == 0, got.stderr
    header = got.stdout.splitlines()[0].split()
    assert header[:3] == ["NAMESPACE", "NAME", "READY"]
    assert "LATENCY" in got.stdout and "EGRESS" in got.stdout and "AGE" in got.stdout
    names = {line.split()[1] for line in got.stdout.splitlines()[1:]}
    assert {"shop", "minimal", "boutique", "trial"} <= names
    # the schema's defaults are filled in by the server
    shop = json.loads(kube.kubectl("get", "tp", "minimal", "-n", "default", "-o", "json").stdout)
    assert shop["spec"]["output"] == "xds" and shop["spec"]["paused"] is False


@needs_kubectl
def test_kubectl_rejects_invalid_policy_naming_the_field(kube: KubeApi) -> None:
    doc = full_manifest()
    doc["metadata"] = {"name": "bad", "namespace": "default"}
    doc["spec"]["services"][1]["port"] = 70000
    doc["spec"]["rollout"]["interval"] = "soon"
    done = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    assert done.returncode != 0
    assert "spec.services" in done.stderr and "port" in done.stderr
    assert "less than or equal to 65535" in done.stderr
    assert "spec.rollout.interval" in done.stderr
    assert kube.kubectl("get", "tp", "bad", "-n", "default").returncode != 0


def test_server_rejects_duplicate_names(kube: KubeApi) -> None:
    doc = full_manifest()
    doc["metadata"] = {"name": "dup", "namespace": "default"}
    doc["spec"]["clusters"].append({"name": "us-west"})
    msg = dry_run_create(kube, doc)
    assert msg is not None and "spec.clusters[2]" in msg and "Duplicate value" in msg


CASES = list(mutations(full_manifest()))


def test_server_and_local_schema_agree_on_every_case(kube: KubeApi) -> None:
    ensure_namespace(kube, "shop")
    disagree = []
    for label, doc in CASES:
        doc["metadata"] = {"name": "case", "namespace": "shop"}
        local = schema_errors(doc)
        server = dry_run_create(kube, doc)
        if bool(local) != (server is not None):
            disagree.append(f"{label}: local={local[:1]} server={server}")
    assert not disagree, "\n".join(disagree)
