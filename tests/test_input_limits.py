"""Bad input of every kind: one short line naming the field, exit 2, whatever the file holds.

One test per fault class (issue 9 item 1); the fuzz test over the public scenarios is in
test_input_fuzz.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_scenario import tiny

from slate.cli import EXIT_INPUT, EXIT_OK, main
from slate.model.errors import InputError, quote
from slate.model.files import MAX_DEPTH, MAX_FILE_BYTES, read_document
from slate.model.routing import load_routing
from slate.model.scenario_file import load_scenario, scenario_from_dict

MAX_LINE = 200


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    f = tmp_path / name
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text)
    return f


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI: exit 2, one line of bounded length on stderr, nothing on stdout."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == EXIT_INPUT, err
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err[:500]
    line = err[:-1]
    assert line.startswith("slate: ")
    assert len(line.removeprefix(f"slate: {argv[1]}: ")) <= MAX_LINE, line
    return line


def good() -> dict[str, Any]:
    return tiny({"max_utilization": 0.8})


def test_file_over_the_size_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = yaml.safe_dump(good()) + "#" * (MAX_FILE_BYTES + 10) + "\n"
    f = write(tmp_path, text)
    line = one_line_error(capsys, "solve", str(f))
    assert "larger than the limit of 1 MB" in line


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_yaml_nested_too_deeply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    n = 100_000  # deep enough to exhaust Python's recursion in a recursive composer
    text = ("[" * n + "]" * n) if kind == "list" else ("{a: " * n + "1" + "}" * n)
    f = write(tmp_path, f"name: x\ngenerator: {text}\n")
    line = one_line_error(capsys, "solve", str(f))
    # libyaml's own limit (1000 levels) may trip first while it scans ahead: either names it.
    assert f"nested deeper than {MAX_DEPTH} levels" in line or "maximum nesting depth" in line
    shallow = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(InputError, match=f"nested deeper than {MAX_DEPTH} levels at line 2"):
        load_scenario(write(tmp_path, f"name: x\ngenerator: {shallow}\n"))


def test_json_route_file_nested_too_deeply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = write(tmp_path, yaml.safe_dump(good()))
    n = 100_000
    routes = write(tmp_path, '{"routes": [], "x": ' + "[" * n + "]" * n + "}", "r.json")
    line = one_line_error(capsys, "simulate", str(scenario), "--routes", str(routes))
    assert "nested deeper than" in line
    routes = write(tmp_path, '{"routes": [], "x": ' + "[" * 40 + "]" * 40 + "}", "r.json")
    with pytest.raises(InputError, match="nested deeper than"):
        load_routing(routes)


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\nclusters: *a9\n"


def test_yaml_alias_bomb_is_refused_in_one_short_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = _alias_bomb()
    assert len(text) < 5000
    f = write(tmp_path, text)
    line = one_line_error(capsys, "solve", str(f))
    assert "expands to more than" in line and "aliases" in line


def test_small_yaml_aliases_still_work(tmp_path: Path) -> None:
    text = yaml.safe_dump(good()).replace("rps:\n", "rps: &demand\n", 1)
    text += "notes: {copy: *demand}\n"
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.total_rps == 150


def test_recursive_yaml_alias(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for loop in ("loop: &x [1, *x]", "first: &x 1\nloop: &x {a: *x}"):
        f = write(tmp_path, yaml.safe_dump(good()) + loop + "\n")
        assert "recursive YAML alias" in one_line_error(capsys, "solve", str(f))


def test_duplicate_yaml_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = yaml.safe_dump(good()) + "objective: {max_utilization: 0.5}\n"
    line = one_line_error(capsys, "solve", str(write(tmp_path, text)))
    assert "duplicate key 'objective' at line" in line


def test_duplicate_key_in_a_nested_mapping(tmp_path: Path) -> None:
    text = "clusters: [a]\nrtt_ms: {a: {a: 0, a: 1}}\n"
    with pytest.raises(InputError, match="duplicate key 'a' at line 2"):
        read_document(write(tmp_path, text), "scenario", "yaml")


def test_duplicate_json_key(tmp_path: Path) -> None:
    f = write(tmp_path, '{"routes": [], "routes": []}', "r.json")
    with pytest.raises(InputError, match="duplicate key 'routes'"):
        load_routing(f)


def test_invalid_utf8_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    raw = yaml.safe_dump(good()).encode() + b"name: caf\xe9\n"
    line = one_line_error(capsys, "solve", str(write(tmp_path, raw)))
    assert "not valid UTF-8: byte 0xe9 at line" in line


def test_control_character_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, yaml.safe_dump(good()) + "name: a\x01b\n")
    line = one_line_error(capsys, "solve", str(f))
    assert "not valid YAML" in line and "\x01" not in line


def test_overlong_integer_literal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = yaml.safe_dump(good()) + "seed: " + "9" * 5000 + "\n"
    assert "not valid YAML" in one_line_error(capsys, "solve", str(write(tmp_path, text)))


NUMBERS = [
    # (field, value as written in YAML, words in the message)
    ("ingress[0].rps.west", ".inf", "must be a finite number"),
    ("ingress[0].rps.west", ".nan", "must be a finite number"),
    ("ingress[0].rps.west", "1.0e308", "must be <= 1e+07"),
    ("ingress[0].rps.west", "5.0e-324", "must be 0 or >= 1e-06"),
    ("ingress[0].rps.west", "9" * 400, "must be a number (got an integer of about 40"),
    ("services.db.replicas.west", "1000000000", "must be <= 10000"),
    ("services.db.replicas.west", "9" * 40, "must be <= 10000"),
    ("services.db.endpoints.get.service_ms", "1.0e9", "must be <= 100000"),
    ("rtt_ms.west.east", "1.0e-30", "must be 0 or >= 1e-06"),
    ("egress_usd_per_gb.default", "1.0e300", "must be <= 1000"),
    ("objective.cost_weight_ms_per_usd_hour", ".inf", "must be a finite number"),
    ("objective.max_utilization", "1.0e-200", "must be 0 or >= 1e-06"),
    ("services.front.endpoints.home.calls[0].per_request", "1.0e12", "must be <= 1000"),
    ("ingress[0].response_kb", "-.inf", "must be a finite number"),
]


def _set(data: dict[str, Any], field: str, value: Any) -> None:
    parts: list[Any] = []
    for p in field.replace("[", ".").replace("]", "").split("."):
        parts.append(int(p) if p.isdigit() else p)
    node: Any = data
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


@pytest.mark.parametrize(("field", "literal", "words"), NUMBERS)
def test_absurd_numbers_are_named_with_their_bound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, literal: str, words: str
) -> None:
    data = good()
    _set(data, field, "@@")
    text = yaml.safe_dump(data, width=10**6).replace("'@@'", literal)
    line = one_line_error(capsys, "solve", str(write(tmp_path, text)))
    assert f": {field}: {words}" in line


def test_weights_bounds_in_a_route_file(tmp_path: Path) -> None:
    route = {"from_service": "ingress", "from_cluster": "west", "to": "front.home"}
    for bad, words in [("1e400", "finite"), ("1e300", "<= 1e+06"), ("1e-300", "0 or >= 1e-09")]:
        f = write(tmp_path, json.dumps({"routes": [{**route, "weights": {"west": "@"}}]}), "r.json")
        f.write_text(f.read_text().replace('"@"', bad))
        with pytest.raises(InputError, match=re.escape(words)) as info:
            load_routing(f)
        assert info.value.path == "routes[0].weights.west"


def test_route_file_predicted_must_be_numbers(tmp_path: Path) -> None:
    f = write(tmp_path, json.dumps({"routes": [], "predicted": {"max_utilization": "x"}}), "r.json")
    with pytest.raises(InputError, match="must be a number") as info:
        load_routing(f)
    assert info.value.path == "predicted.max_utilization"


def test_a_service_called_ingress_is_refused() -> None:
    data = good()
    data["services"]["ingress"] = data["services"].pop("db")
    data["services"]["front"]["endpoints"]["home"]["calls"][0]["to"] = "ingress.get"
    with pytest.raises(InputError, match="reserved for the ingress gateways") as info:
        scenario_from_dict(data)
    assert info.value.path == "services.ingress"


def test_long_values_are_quoted_truncated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = good()
    data["services"]["front"]["endpoints"]["home"]["calls"][0]["to"] = "x" * 100_000
    line = one_line_error(capsys, "solve", str(write(tmp_path, yaml.safe_dump(data))))
    assert "calls[0].to: unknown endpoint 'xxxx" in line and "..." in line
    data = good()
    data["services"]["y" * 100_000 + ".z"] = data["services"]["db"]
    one_line_error(capsys, "solve", str(write(tmp_path, yaml.safe_dump(data))))


def test_quote_is_bounded_for_every_kind_of_value() -> None:
    assert quote("a\nb") == "'a\\nb'"
    assert len(quote("z" * 10_000)) <= 40
    assert quote(10**5000) == "an integer of about 5001 digits"
    assert quote({"a": 1}) == "a mapping" and quote([1]) == "a list"


UNKNOWN = [
    ("objective", "max_utilisation", "objective.max_utilisation", "max_utilization"),
    ("objective", "cost_weight", "objective.cost_weight", "cost_weight_ms_per_usd_hour"),
    ("services.front.endpoints.home", "call", "services.front.endpoints.home.call", "calls"),
    ("", "egress_usd_per_GB", "egress_usd_per_GB", "egress_usd_per_gb"),
    ("ingress[0]", "rsp", "ingress[0].rsp", "rps"),
]


@pytest.mark.parametrize(("where", "key", "path", "near"), UNKNOWN)
def test_unknown_keys_warn_with_the_nearest_known_key_and_strict_refuses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, key: str, path: str, near: str
) -> None:
    data = good()
    node: Any = data
    for p in [p for p in where.replace("[", ".").replace("]", "").split(".") if p]:
        node = node[int(p) if p.isdigit() else p]
    node[key] = 1
    f = write(tmp_path, yaml.safe_dump(data))
    code = main(["solve", str(f)])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and json.loads(out)["routes"]
    assert err == f"slate: warning: {f}: {path}: unknown key (did you mean '{near}'?)\n"
    line = one_line_error(capsys, "solve", str(f), "--strict")
    assert line.endswith(
        f"{path}: unknown key (did you mean '{near}'?); --strict refuses unknown keys"
    )


def test_extra_keys_without_a_near_name_still_only_warn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = good()
    data["generator"] = {"seed": 3}
    f = write(tmp_path, yaml.safe_dump(data))
    assert main(["simulate", str(f)]) == EXIT_OK
    err = capsys.readouterr().err
    assert "generator: unknown key (known: name, clusters," in err


def test_unknown_keys_in_a_route_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scenario = write(tmp_path, yaml.safe_dump(good()))
    route = {"from_service": "ingress", "from_cluster": "west", "to": "front.home"}
    routes = write(tmp_path, json.dumps({"routes": [{**route, "weight": {"west": 1}}]}), "r.json")
    # The misspelt weights are not a route: the route file names the required key and the typo.
    line = one_line_error(capsys, "simulate", str(scenario), "--routes", str(routes))
    assert line.endswith("routes[0].weights: is required (found 'weight')")
    routes.write_text(json.dumps({"routes": [{**route, "weights": {"west": 1}, "note": 1}]}))
    assert main(["simulate", str(scenario), "--routes", str(routes)]) == EXIT_OK
    assert "routes[0].note: unknown key" in capsys.readouterr().err
    line = one_line_error(capsys, "simulate", str(scenario), "--routes", str(routes), "--strict")
    assert "routes[0].note: unknown key" in line


def test_exponent_floats_read_as_numbers_as_in_yaml_1_2(tmp_path: Path) -> None:
    text = yaml.safe_dump(good()).replace("service_ms: 1\n", "service_ms: 1e-3\n")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.app.endpoint("db.get").service_ms == 0.001
