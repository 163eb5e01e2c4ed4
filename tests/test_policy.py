"""TrafficPolicy manifests (trafficpolicy.md): parsing, defaults, errors naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from slate.model.errors import InputError
from slate.model.policy import (
    EndpointMatch,
    cross_field_problems,
    format_duration,
    load_policy,
    parse_duration,
    policy_from_manifest,
)

POLICIES = Path(__file__).resolve().parent.parent / "examples" / "policies"

BASE: dict[str, Any] = {
    "apiVersion": "slate.dev/v1alpha1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "shop", "namespace": "shop", "generation": 3},
    "spec": {
        "clusters": [{"name": "us-west", "region": "us-west1"}, {"name": "us-east"}],
        "services": [
            {
                "name": "frontend",
                "port": 8080,
                "endpoints": [
                    {"name": "home", "match": {"method": "GET"}},
                    {"name": "checkout", "match": {"method": "POST", "pathPrefix": "/cart"}},
                ],
            },
            {"name": "cart", "port": 7070},
        ],
        "network": {
            "rtt": [{"from": "us-west", "to": "us-east", "ms": 62}],
            "egress": {"prices": [{"from": "us-west", "to": "us-east", "usdPerGb": 0.08}]},
        },
    },
}

DELETE = object()


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set (DELETE removes it); path like `spec.clusters.1.name`."""
    data = copy.deepcopy(BASE)
    node: Any = data
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for p in parts[:-1]:
        node = node[p]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


def test_base_parses_with_contract_defaults() -> None:
    p = policy_from_manifest(BASE)
    assert (p.name, p.namespace, p.key, p.generation) == ("shop", "shop", "shop/shop", 3)
    assert [(c.name, c.region) for c in p.clusters] == [
        ("us-west", "us-west1"),
        ("us-east", "us-east"),  # region defaults to the name
    ]
    assert p.endpoint_ids() == ["frontend.home", "frontend.checkout", "cart"]
    assert p.services[0].endpoints[1].match == EndpointMatch("POST", "/cart")
    assert p.rtt("us-east", "us-west") == 62 and p.rtt("us-west", "us-west") == 0
    assert p.egress_price("us-west", "us-east") == 0.08
    assert p.egress_price("us-east", "us-west") == 0.02  # directional: the default applies
    assert p.egress_default_usd_per_gb == 0.02
    assert p.cost_weight_ms_per_usd_hour == 0.0 and p.max_utilization == 0.9
    assert (p.interval_s, p.max_shift_per_interval, p.min_local_share) == (30.0, 0.1, 0.0)
    assert (p.prometheus_url, p.window_s, p.endpoint_label) == (None, 120.0, "slate_endpoint")
    assert (p.output, p.paused) == ("xds", False)


def test_every_field_is_read() -> None:
    data = copy.deepcopy(BASE)
    data["spec"].update(
        objective={"costWeightMsPerUsdHour": 20, "maxUtilization": 0.8},
        rollout={"interval": "1m30s", "maxShiftPerInterval": 0.25, "minLocalShare": 0.5},
        telemetry={"prometheusUrl": "http://prom:9090", "window": "5m", "endpointLabel": "op"},
        output="destinationRule",
        paused=True,
    )
    data["spec"]["network"]["egress"]["defaultUsdPerGb"] = 0.01
    p = policy_from_manifest(data)
    assert (p.cost_weight_ms_per_usd_hour, p.max_utilization) == (20, 0.8)
    assert (p.interval_s, p.max_shift_per_interval, p.min_local_share) == (90.0, 0.25, 0.5)
    assert (p.prometheus_url, p.window_s, p.endpoint_label) == ("http://prom:9090", 300.0, "op")
    assert (p.output, p.paused, p.egress_default_usd_per_gb) == ("destinationRule", True, 0.01)


def test_value_is_immutable() -> None:
    p = policy_from_manifest(BASE)
    with pytest.raises(AttributeError):
        p.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.rtt_ms[("a", "b")] = 1  # type: ignore[index]


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    p = load_policy(path)
    assert p.clusters and p.services
    assert not cross_field_problems(yaml.safe_load(path.read_text())["spec"])


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("1h0m5s", 3605)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "30", "s", "1.5s", "30S", "2m1h", "5 s", "-5s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# (change, path in the error, words in the reason)
BAD: list[tuple[str, Any, str, str]] = [
    ("spec.clusters", [], "spec.clusters", "at least 1"),
    ("spec.clusters", DELETE, "spec.clusters", "required"),
    ("spec.clusters.1.name", "US_East", "spec.clusters[1].name", "DNS-1123"),
    ("spec.clusters.1.name", "x" * 64, "spec.clusters[1].name", "at most 63"),
    ("spec.clusters.1.name", 7, "spec.clusters[1].name", "string"),
    ("spec.clusters.0.region", "Us West", "spec.clusters[0].region", "lowercase"),
    ("spec.services.1.port", 0, "spec.services[1].port", ">= 1"),
    ("spec.services.1.port", 65536, "spec.services[1].port", "<= 65535"),
    ("spec.services.1.port", "80", "spec.services[1].port", "whole number"),
    ("spec.services.1.port", DELETE, "spec.services[1].port", "required"),
    ("spec.services.0.endpoints", [], "spec.services[0].endpoints", "at least 1"),
    (
        "spec.services.0.endpoints.0.match.method",
        "get",
        "spec.services[0].endpoints[0].match.method",
        "one of",
    ),
    (
        "spec.services.0.endpoints.1.match.pathPrefix",
        "cart",
        "spec.services[0].endpoints[1].match.pathPrefix",
        "starting with '/'",
    ),
    (
        "spec.services.0.endpoints.0.match",
        DELETE,
        "spec.services[0].endpoints[0].match",
        "required",
    ),
    ("spec.network.rtt.0.ms", -1, "spec.network.rtt[0].ms", ">= 0"),
    (
        "spec.network.egress.prices.0.usdPerGb",
        "cheap",
        "spec.network.egress.prices[0].usdPerGb",
        "number",
    ),
    ("spec.objective", {"maxUtilization": 1}, "spec.objective.maxUtilization", "< 1"),
    ("spec.objective", {"maxUtilization": 0}, "spec.objective.maxUtilization", "> 0"),
    (
        "spec.objective",
        {"costWeightMsPerUsdHour": -2},
        "spec.objective.costWeightMsPerUsdHour",
        ">= 0",
    ),
    ("spec.rollout", {"interval": "30"}, "spec.rollout.interval", "duration"),
    ("spec.rollout", {"interval": "4s"}, "spec.rollout.interval", "at least 5s"),
    ("spec.rollout", {"maxShiftPerInterval": 0}, "spec.rollout.maxShiftPerInterval", "> 0"),
    ("spec.rollout", {"maxShiftPerInterval": 1.5}, "spec.rollout.maxShiftPerInterval", "<= 1"),
    ("spec.rollout", {"minLocalShare": -0.1}, "spec.rollout.minLocalShare", ">= 0"),
    ("spec.telemetry", {"window": "29s"}, "spec.telemetry.window", "at least 30s"),
    ("spec.telemetry", {"prometheusUrl": "prom:9090"}, "spec.telemetry.prometheusUrl", "URL"),
    ("spec.telemetry", {"endpointLabel": "a-b"}, "spec.telemetry.endpointLabel", "label"),
    ("spec.output", "istio", "spec.output", "one of"),
    ("spec.paused", "yes", "spec.paused", "true or false"),
    ("kind", "Policy", "kind", "TrafficPolicy"),
    ("apiVersion", "slate.dev/v1", "apiVersion", "v1alpha1"),
    ("metadata.name", DELETE, "metadata.name", "required"),
    # cross-field rules (the webhook's)
    ("spec.clusters.1.name", "us-west", "spec.clusters[1].name", "duplicate cluster"),
    ("spec.services.1.name", "frontend", "spec.services[1].name", "duplicate service"),
    (
        "spec.services.0.endpoints.1.name",
        "home",
        "spec.services[0].endpoints[1].name",
        "duplicate endpoint",
    ),
    ("spec.network.rtt.0.to", "eu-west", "spec.network.rtt[0].to", "unknown cluster 'eu-west'"),
    (
        "spec.network.egress.prices.0.from",
        "asia",
        "spec.network.egress.prices[0].from",
        "unknown cluster",
    ),
    ("spec.network.rtt.0.to", "us-west", "spec.network.rtt[0].to", "same cluster"),
    (
        "spec.services.0.endpoints.1.match",
        {"pathPrefix": "/"},
        "spec.services[0].endpoints[1].match",
        "same requests as endpoints[0]",
    ),
    (
        "spec.services.0.endpoints.1.match",
        {},
        "spec.services[0].endpoints[1].match",
        "method or pathPrefix",
    ),
]


@pytest.mark.parametrize(
    ("change", "value", "path", "words"), BAD, ids=[b[2] + ":" + b[3] for b in BAD]
)
def test_bad_manifest_names_the_field(change: str, value: Any, path: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        policy_from_manifest(with_change(change, value))
    assert err.value.path == path
    assert words.lower() in err.value.reason.lower(), err.value.reason


def test_not_a_mapping() -> None:
    with pytest.raises(InputError, match="must be a mapping"):
        policy_from_manifest(["apiVersion"])


def test_extra_fields_are_ignored() -> None:
    data = with_change("spec.futureField", {"x": 1})
    data["spec"]["clusters"][0]["zone"] = "a"
    assert policy_from_manifest(data) == policy_from_manifest(BASE)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("GET", None), ("POST", None), False),
        (("GET", "/a"), (None, "/b"), False),
        ((None, "/cart"), (None, "/cart/checkout"), True),
        (("GET", "/cart"), ("POST", "/cart"), False),
        ((None, None), ("GET", "/x"), True),
        (("GET", "/cart"), (None, "/"), True),
    ],
)
def test_endpoint_overlap(
    a: tuple[str | None, str | None], b: tuple[str | None, str | None], overlap: bool
) -> None:
    assert EndpointMatch(*a).overlaps(EndpointMatch(*b)) is overlap
    assert EndpointMatch(*b).overlaps(EndpointMatch(*a)) is overlap


def test_cross_field_reports_every_problem_with_paths() -> None:
    spec = copy.deepcopy(BASE["spec"])
    spec["clusters"].append({"name": "us-west"})
    spec["network"]["rtt"].append({"from": "us-east", "to": "us-west", "ms": 70})  # same pair
    spec["network"]["egress"]["prices"].append({"from": "mars", "to": "us-east", "usdPerGb": 1})
    spec["rollout"] = {"interval": "1s"}
    problems = cross_field_problems(spec)
    assert [p.path for p in problems] == [
        "spec.clusters[2].name",
        "spec.network.rtt[1]",
        "spec.network.egress.prices[1].from",
        "spec.rollout.interval",
    ]
    # the manifest parser reports the first and counts the rest
    with pytest.raises(InputError, match=r"and 3 more problems") as err:
        policy_from_manifest({**BASE, "spec": spec})
    assert err.value.path == "spec.clusters[2].name"


def test_cross_field_tolerates_malformed_specs() -> None:
    assert cross_field_problems({}) == []
    assert cross_field_problems({"clusters": "x", "services": [1, None], "network": 3}) == []


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(with_change("spec.services.1.port", 0)))
    with pytest.raises(InputError) as err:
        load_policy(f)
    assert str(err.value).startswith(f"{f}: spec.services[1].port: must be >= 1")
    f.write_text("spec: [")
    with pytest.raises(InputError, match="not valid YAML"):
        load_policy(f)


def test_namespace_defaults_and_no_generation(tmp_path: Path) -> None:
    data = with_change("metadata", {"name": "p"})
    p = policy_from_manifest(data)
    assert (p.namespace, p.generation) == ("default", None)
