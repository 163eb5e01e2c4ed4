"""The `slate` CLI: the route contract on stdout, comparisons, exit codes and input errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slate.cli import EXIT_INPUT, EXIT_OK, EXIT_OVER_CAPACITY, main

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
BOUTIQUE = SCENARIOS / "boutique-2r.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solve_prints_the_route_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "solve", str(BOUTIQUE), "--format", "json")
    assert code == EXIT_OK and err == ""
    data = json.loads(out)
    assert set(data) == {"routes", "predicted"}
    assert set(data["predicted"]) == {"mean_latency_ms", "egress_usd_per_hour", "max_utilization"}
    assert data["predicted"]["mean_latency_ms"] == pytest.approx(38.49, abs=0.01)
    keys = set()
    for r in data["routes"]:
        assert set(r) == {"from_service", "from_cluster", "to", "weights"}
        assert all(w >= 0 for w in r["weights"].values())
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-5)
        keys.add((r["from_service"], r["from_cluster"], r["to"]))
    assert len(keys) == len(data["routes"])
    assert ("ingress", "us-west", "frontend.home") in keys
    assert ("checkout", "us-east", "cart.get") in keys


def test_solve_defaults_to_json_and_each_policy_works(capsys: pytest.CaptureFixture[str]) -> None:
    for policy in ("optimal", "local", "global", "waterfall"):
        code, out, _ = run(capsys, "solve", str(SCENARIOS / "hotel-3r.yaml"), "--policy", policy)
        assert code == EXIT_OK
        pred = json.loads(out)["predicted"]
        if policy == "local":  # overloads us-west: no finite latency to predict
            assert pred["mean_latency_ms"] is None and pred["max_utilization"] > 1
        else:
            assert pred["mean_latency_ms"] > 0


def test_local_overload_is_warned(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "solve", str(BOUTIQUE), "--policy", "local")
    assert code == EXIT_OK
    assert "overloads frontend@us-west" in err


def test_solve_table_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "solve", str(BOUTIQUE), "--format", "table")
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == ["from", "to", "weights"]
    assert "ingress@us-west" in out and "predicted: mean latency 38.4" in out


def test_simulate_compares_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", str(BOUTIQUE), "--format", "json")
    assert code == EXIT_OK
    data = json.loads(out)
    rows = {p["policy"]: p for p in data["policies"]}
    assert set(rows) == {"optimal", "local", "global", "waterfall"}
    assert rows["optimal"]["ratio_to_optimal"]["objective"] == 1.0
    assert rows["waterfall"]["ratio_to_optimal"]["objective"] == pytest.approx(
        46.48 / 38.49, rel=0.005
    )
    assert rows["local"]["mean_latency_ms"] is None  # overload
    assert {(o["service"], o["cluster"]) for o in rows["local"]["overloaded"]} >= {
        ("frontend", "us-west")
    }
    assert set(rows["global"]["ingress_latency_ms"]) == {
        "frontend.home",
        "frontend.product",
        "frontend.checkout",
    }
    # Per-entry latencies average (by rps) to the mean latency.
    s = yaml.safe_load(BOUTIQUE.read_text())
    rps = {i["endpoint"]: sum(i["rps"].values()) for i in s["ingress"]}
    g = rows["global"]
    mean = sum(rps[e] * v for e, v in g["ingress_latency_ms"].items()) / sum(rps.values())
    assert mean == pytest.approx(g["mean_latency_ms"], rel=1e-4)
    assert data["optimal_bound"] <= rows["optimal"]["objective"] + 1e-3


def test_simulate_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", str(BOUTIQUE))
    assert code == EXIT_OK
    assert (
        "x optimal" in out and "waterfall" in out and "overloaded stations: frontend@us-west" in out
    )
    assert "mean latency per ingress endpoint" in out


def test_simulate_given_routes_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, out, _ = run(capsys, "solve", str(BOUTIQUE), "--policy", "waterfall")
    routes = tmp_path / "routes.json"
    routes.write_text(out)
    code, out, _ = run(
        capsys, "simulate", str(BOUTIQUE), "--routes", str(routes), "--format", "json"
    )
    assert code == EXIT_OK
    rows = {p["policy"]: p for p in json.loads(out)["policies"]}
    assert set(rows) == {"routes", "optimal"}
    assert rows["routes"]["mean_latency_ms"] == pytest.approx(46.48, rel=0.005)


def test_simulate_routes_that_name_a_whole_service(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Send every frontend request from us-west to us-east: a service-level route.
    routes = tmp_path / "routes.json"
    routes.write_text(
        json.dumps(
            {
                "routes": [
                    {
                        "from_service": "ingress",
                        "from_cluster": "us-west",
                        "to": "frontend",
                        "weights": {"us-east": 1},
                    },
                ]
            }
        )
    )
    code, out, _ = run(
        capsys, "simulate", str(BOUTIQUE), "--routes", str(routes), "--format", "json"
    )
    assert code == EXIT_OK
    given = next(p for p in json.loads(out)["policies"] if p["policy"] == "routes")
    # Everything from us-west crosses the ocean once: egress is paid on every ingress request.
    assert given["egress_usd_per_hour"] > 1.0


def _overloaded_boutique(tmp_path: Path, factor: float) -> Path:
    data: dict[str, Any] = yaml.safe_load(BOUTIQUE.read_text())
    for ing in data["ingress"]:
        ing["rps"] = {c: v * factor for c, v in ing["rps"].items()}
    path = tmp_path / "hot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("factor", [1.3, 2.0])
def test_over_capacity_says_which_service_and_prints_least_overloaded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, factor: float
) -> None:
    code, out, err = run(capsys, "solve", str(_overloaded_boutique(tmp_path, factor)))
    assert code == EXIT_OVER_CAPACITY
    assert "does not fit under max_utilization" in err
    assert "recommendation needs" in err and "% of its demand is too much" in err
    data = json.loads(out)  # the routes are still a valid route file
    util = data["predicted"]["max_utilization"]
    # The least overloaded routing holds the bottleneck service at its lowest reachable utilization.
    assert util > 0.9
    if factor < 1.3 * 1.05:
        assert util < 1 and data["predicted"]["mean_latency_ms"] is not None
    else:
        assert data["predicted"]["mean_latency_ms"] is None  # overloaded whatever the routing
        assert "productcatalog needs" in err and "saturates under any routing" in err


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slate.cli", *argv], capture_output=True, text=True, timeout=60
    )


def test_bad_scenario_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    data = yaml.safe_load(BOUTIQUE.read_text())
    data["services"]["frontend"]["endpoints"]["home"]["calls"][0]["to"] = "productcatalog.lst"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    for cmd in ("solve", "simulate"):
        proc = _cli(cmd, str(bad))
        assert proc.returncode == EXIT_INPUT
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr == (
            f"slate: {bad}: services.frontend.endpoints.home.calls[0].to: "
            "unknown endpoint 'productcatalog.lst' (want service.endpoint)\n"
        )


def test_bad_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [a\n")
    for path in (bad, tmp_path / "missing.yaml"):
        proc = _cli("solve", str(path))
        assert proc.returncode == EXIT_INPUT and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"slate: {path}: ")


@pytest.mark.parametrize(
    ("route", "field"),
    [
        (
            {
                "from_service": "ingress",
                "from_cluster": "mars",
                "to": "frontend.home",
                "weights": {"us-west": 1},
            },
            "routes[0].from_cluster",
        ),
        (
            {
                "from_service": "ingress",
                "from_cluster": "us-west",
                "to": "frontend.away",
                "weights": {"us-west": 1},
            },
            "routes[0].to",
        ),
        (
            {
                "from_service": "ingress",
                "from_cluster": "us-west",
                "to": "frontend.home",
                "weights": {"us-west": -1},
            },
            "routes[0].weights.us-west",
        ),
        (
            {"from_service": "ingress", "from_cluster": "us-west", "to": "frontend.home"},
            "routes[0].weights",
        ),
        (
            {
                "from_service": "nobody",
                "from_cluster": "us-west",
                "to": "frontend.home",
                "weights": {"us-west": 1},
            },
            "routes[0].from_service",
        ),
    ],
)
def test_bad_route_file_exits_2_naming_the_field(
    tmp_path: Path, route: dict[str, Any], field: str
) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({"routes": [route]}))
    proc = _cli("simulate", str(BOUTIQUE), "--routes", str(routes))
    assert proc.returncode == EXIT_INPUT and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"slate: {routes}: {field}: ")


def test_predicted_is_consistent_with_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "solve", str(SCENARIOS / "alibaba-3r.yaml"))
    pred = json.loads(out)["predicted"]
    _, out, _ = run(capsys, "simulate", str(SCENARIOS / "alibaba-3r.yaml"), "--format", "json")
    opt = next(p for p in json.loads(out)["policies"] if p["policy"] == "optimal")
    assert math.isclose(pred["mean_latency_ms"], opt["mean_latency_ms"], rel_tol=1e-6)
    assert math.isclose(pred["egress_usd_per_hour"], opt["egress_usd_per_hour"], rel_tol=1e-3)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ((), "COMMAND"),
        (("solve",), "scenario"),
        (("solve", str(BOUTIQUE), "--policy", "x" * 500), "--policy"),
        (("run",), "--policy"),
        (("xds", "serve", "--nope"), "--routes"),
    ],
)
def test_usage_errors_are_one_bounded_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], names: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exc.value.code == EXIT_INPUT and out == ""
    assert err.count("\n") == 1 and names in err and "--help" in err
    assert len(err) < 300
