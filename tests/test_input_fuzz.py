"""Fuzzing the input path with mutations of the public scenarios (derandomized and bounded).

Every mutated document either parses or raises InputError (never another exception), and the CLI
run on a sample of them exits 0, 2 or 3 with, on 2, one line on stderr. Text mutations hit the
reader (bytes, YAML syntax, aliases, nesting); value mutations hit the schema and meaning checks.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slate.cli import EXIT_INPUT, EXIT_OK, EXIT_OVER_CAPACITY, main
from slate.model.errors import InputError
from slate.model.files import decode, parse_text
from slate.model.scenario_file import scenario_from_dict

SCENARIOS = sorted(
    (Path(__file__).resolve().parent.parent / "examples" / "scenarios").glob("*.yaml")
)
MUTATIONS_PER_FILE = 700
CLI_EVERY = 40  # run the whole CLI on one mutation in this many

TOKENS = [
    "&a ",
    "*a",
    "*nope",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\t",
    ".inf",
    "-.inf",
    ".nan",
    "-1",
    "1e308",
    "1.0e-320",
    "9" * 60,
    "!!python/object/apply:os.system ['true']",
    "\x00",
    "\x85",
    "'",
    '"',
    "<<: *a",
    "? ",
    "|",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "ingress",
    "\ufeff",
    "#",
]
VALUES: list[Any] = [
    -1,
    0,
    1,
    5e-324,
    1e-9,
    1e308,
    10**30,
    10**400,
    float("inf"),
    float("nan"),
    "",
    "x" * 300,
    None,
    [],
    {},
    True,
    "ingress",
    "a.b",
    [1, 2],
    {"k": 1},
    "us-west",
    "frontend.home",
    0.5,
    2**31,
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _mutate_value(rng: random.Random, data: dict[str, Any]) -> str:
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    path = rng.choice(paths)
    parent: Any = data
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    how = rng.randrange(4)
    if how == 0:
        parent[key] = rng.choice(VALUES)
    elif how == 1:
        del parent[key]
    elif how == 2 and isinstance(parent, dict):
        typo = str(key)[:-1] or "x"
        parent[typo] = parent.pop(key)
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[rng.choice(["extra", "max_utilisation", "call", "rsp"])] = rng.choice(VALUES)
        else:
            target.append(rng.choice(VALUES))
    return yaml.dump(data, Dumper=yaml.CSafeDumper, width=10**6)


def _mutate_text(rng: random.Random, text: str) -> str:
    how = rng.randrange(6)
    lines = text.splitlines(keepends=True)
    if how == 0:
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return raw.decode("utf-8", errors="surrogateescape")
    if how == 1:
        del lines[rng.randrange(len(lines))]
    elif how == 2:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif how == 3:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif how == 4:
        at = rng.randrange(len(text))
        return text[:at] + rng.choice(TOKENS) + text[at:]
    else:
        return text[: rng.randrange(len(text))]
    return "".join(lines)


def _cases() -> Iterator[tuple[str, int, bytes]]:
    for path in SCENARIOS:
        text = path.read_text()
        data = yaml.safe_load(text)
        rng = random.Random(f"slate-fuzz-{path.name}")  # derandomized: same cases every run
        for i in range(MUTATIONS_PER_FILE):
            out = _mutate_value(rng, data) if i % 2 else _mutate_text(rng, text)
            yield path.name, i, out.encode("utf-8", errors="surrogateescape")


@pytest.mark.timeout(240)
def test_every_mutation_parses_or_raises_input_error(tmp_path: Path) -> None:
    outcomes = {"parsed": 0, "input_error": 0}
    cli_codes: dict[int, int] = {}
    for name, i, raw in _cases():
        try:
            scenario_from_dict(parse_text(decode(raw), "yaml"))
            outcomes["parsed"] += 1
        except InputError:
            outcomes["input_error"] += 1
        except Exception as e:  # pragma: no cover - the failure being looked for
            pytest.fail(f"{name} mutation {i}: {type(e).__name__}: {e!s:.300}\n{raw[:2000]!r}")
        if i % CLI_EVERY == 0:
            f = tmp_path / f"{name}-{i}.yaml"
            f.write_bytes(raw)
            code = _cli(f)
            cli_codes[code] = cli_codes.get(code, 0) + 1
    # The mutations exercise both sides (a fuzzer whose cases all fail parsing tests nothing).
    assert outcomes["parsed"] > 100 and outcomes["input_error"] > 500, outcomes
    assert set(cli_codes) <= {EXIT_OK, EXIT_INPUT, EXIT_OVER_CAPACITY}, cli_codes
    assert cli_codes.get(EXIT_OK, 0) > 0 and cli_codes.get(EXIT_INPUT, 0) > 0, cli_codes


def _cli(f: Path) -> int:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["solve", str(f)])
    lines = [ln for ln in err.getvalue().splitlines() if not ln.startswith("slate: warning:")]
    if code == EXIT_INPUT:
        assert len(lines) == 1 and len(lines[0]) <= 200 + len(str(f)) + 9, err.getvalue()[:1000]
        assert out.getvalue() == ""
    return code
