"""Scenario files: what parses, and that every kind of bad input names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_scenario import tiny

from slate.model.errors import InputError
from slate.model.scenario_file import load_scenario, scenario_from_dict

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"

BASE: dict[str, Any] = tiny({"cost_weight_ms_per_usd_hour": 2, "max_utilization": 0.8})


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set (value DELETE removes it); path like `services.front.replicas`."""
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


DELETE = object()


def test_base_parses_with_defaults_applied() -> None:
    s = scenario_from_dict(BASE)
    assert s.topology.clusters == ("west", "east")
    assert s.topology.rtt("east", "west") == 40  # (b, a) defaults to (a, b)
    assert s.topology.rtt("west", "west") == 0
    assert s.topology.egress_price("west", "east") == 0.05
    assert s.topology.egress_price("east", "west") == 0.02  # the default, not mirrored
    assert s.topology.egress_price("east", "east") == 0.0
    assert s.objective.max_utilization == 0.8
    assert s.app.service("db").clusters == ("west",)
    assert s.app.topo_order == ("front.home", "db.get")
    assert s.total_rps == 150


def test_objective_defaults() -> None:
    s = scenario_from_dict(with_change("objective", DELETE))
    assert s.objective.cost_weight_ms_per_usd_hour == 0
    assert s.objective.max_utilization == 0.9


def test_extra_keys_are_ignored() -> None:
    data = with_change("services.db.owner", "team-a")
    data["generator"] = {"seed": 3}
    assert scenario_from_dict(data).app.has_service("db")


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
def test_public_scenarios_parse(name: str) -> None:
    s = load_scenario(SCENARIOS / f"{name}.yaml")
    assert s.name == name
    assert len(s.app.topo_order) == len(s.app.endpoints)


BAD = [
    # (change, value, field path named, words in the reason)
    (
        "services.front.endpoints.home.calls.0.to",
        "db.put",
        "services.front.endpoints.home.calls[0].to",
        "unknown endpoint",
    ),
    (
        "services.front.endpoints.home.calls.0.to",
        "nosuch.get",
        "services.front.endpoints.home.calls[0].to",
        "unknown endpoint",
    ),
    (
        "services.front.endpoints.home.service_ms",
        -1,
        "services.front.endpoints.home.service_ms",
        "must be >= 0",
    ),
    (
        "services.front.endpoints.home.service_ms",
        DELETE,
        "services.front.endpoints.home.service_ms",
        "required",
    ),
    (
        "services.front.endpoints.home.service_ms",
        "fast",
        "services.front.endpoints.home.service_ms",
        "must be a number",
    ),
    (
        "services.front.endpoints.home.calls.0.per_request",
        -2,
        "services.front.endpoints.home.calls[0].per_request",
        ">= 0",
    ),
    (
        "services.front.endpoints.home.calls.0.request_kb",
        DELETE,
        "services.front.endpoints.home.calls[0].request_kb",
        "required",
    ),
    (
        "services.front.replicas",
        {"west": 2, "north": 1},
        "services.front.replicas.north",
        "unknown cluster 'north'",
    ),
    ("services.front.replicas.west", -1, "services.front.replicas.west", ">= 0"),
    (
        "services.db.replicas",
        {"west": 0},
        "services.front.endpoints.home.calls[0].to",
        "no replicas in any cluster",
    ),
    (
        "services.db.replicas",
        DELETE,
        "services.front.endpoints.home.calls[0].to",
        "no replicas in any cluster",
    ),
    ("rtt_ms", {"west": {"south": 3}}, "rtt_ms.west.south", "unknown cluster 'south'"),
    ("rtt_ms", {}, "rtt_ms.west.east", "no RTT between west and east"),
    ("rtt_ms.west.east", -5, "rtt_ms.west.east", ">= 0"),
    ("egress_usd_per_gb.west", {"mars": 0.1}, "egress_usd_per_gb.west.mars", "unknown cluster"),
    ("egress_usd_per_gb.default", -0.1, "egress_usd_per_gb.default", ">= 0"),
    ("objective.max_utilization", 1.5, "objective.max_utilization", "must be <= 1"),
    ("objective.max_utilization", 0, "objective.max_utilization", "must be > 0"),
    ("ingress.0.endpoint", "front.away", "ingress[0].endpoint", "unknown endpoint"),
    ("ingress.0.rps", {"west": 100, "moon": 1}, "ingress[0].rps.moon", "unknown cluster"),
    ("ingress.0.rps", {"west": -1}, "ingress[0].rps.west", ">= 0"),
    ("ingress.0.rps", {"west": 0}, "ingress", "total ingress rate is zero"),
    ("ingress", [], "ingress", "at least 1 item"),
    ("clusters", ["west", "east", "west"], "clusters[2]", "duplicate cluster"),
    ("clusters", DELETE, "clusters", "required"),
    ("services", DELETE, "services", "required"),
]


@pytest.mark.parametrize(
    ("change", "value", "path", "reason"), BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD]
)
def test_bad_input_names_field_and_reason(change: str, value: Any, path: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        scenario_from_dict(with_change(change, value))
    assert info.value.path == path
    assert reason in info.value.reason


def test_call_cycle_is_reported_as_a_path() -> None:
    data = with_change(
        "services.db.endpoints.get.calls",
        [{"to": "front.home", "per_request": 1, "request_kb": 0, "response_kb": 0}],
    )
    with pytest.raises(InputError) as info:
        scenario_from_dict(data)
    assert info.value.path == "services.front.endpoints.home.calls"
    assert "cycle: front.home -> db.get -> front.home" in info.value.reason


def test_self_call_is_a_cycle() -> None:
    data = with_change(
        "services.db.endpoints.get.calls",
        [{"to": "db.get", "per_request": 1, "request_kb": 0, "response_kb": 0}],
    )
    with pytest.raises(InputError, match=r"cycle: db\.get -> db\.get"):
        scenario_from_dict(data)


def test_several_problems_are_counted_in_one_message() -> None:
    data = with_change("services.front.endpoints.home.service_ms", -1)
    data["services"]["db"]["endpoints"]["get"]["service_ms"] = -1
    with pytest.raises(InputError, match=r"\(and 1 more problem\)"):
        scenario_from_dict(data)


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("name: x\nclusters: [a, b\nservices: {}\n")
    with pytest.raises(InputError) as info:
        load_scenario(f)
    assert str(f) in str(info.value)
    assert "not valid YAML" in info.value.reason and "line" in info.value.reason


def test_not_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "list.yaml"
    f.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(InputError, match="must be a YAML mapping"):
        load_scenario(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read scenario"):
        load_scenario(tmp_path / "nope.yaml")
