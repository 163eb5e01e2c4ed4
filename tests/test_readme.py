"""The README's `slate solve` / `slate simulate` commands run as written and exit 0.

Only the commands that run offline are taken (lines starting `slate solve` or `slate simulate` in
```sh blocks); each runs through the shell (so redirections work) in a scratch directory that sees
the repository's examples/. A `slate simulate SCENARIO --routes FILE` line judges a route file
the README leaves to the reader: FILE is made first with `slate solve SCENARIO > FILE`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_commands(text: str) -> list[str]:
    """`slate solve`/`slate simulate` lines of the ```sh blocks, in README order."""
    lines: list[str] = []
    for block in re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, re.S | re.M):
        lines += [ln.strip() for ln in block.splitlines()]
    return [ln for ln in lines if re.match(r"slate (solve|simulate)\b", ln)]


def route_file_first(cmd: str) -> str | None:
    """`slate solve S > F` for a `slate simulate S --routes F ...` line, else None."""
    m = re.match(r"slate simulate (\S+) .*--routes[ =](\S+)", cmd)
    return f"slate solve {m[1]} > {m[2]}" if m else None


def test_the_readme_has_commands_to_run() -> None:
    cmds = readme_commands(README.read_text())
    assert any(c.startswith("slate solve") for c in cmds)
    assert any(c.startswith("slate simulate") for c in cmds)
    assert readme_commands("```sh\nslate simulate a\nls\nslate solve b > r.json\n```\n") == [
        "slate simulate a",
        "slate solve b > r.json",
    ]
    assert (
        route_file_first("slate simulate s.yaml --routes r.json  # x")
        == "slate solve s.yaml > r.json"
    )
    assert route_file_first("slate simulate s.yaml") is None


def test_readme_commands_exit_0(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in readme_commands(README.read_text()):
        before = route_file_first(line)
        cmd = f"{before} && {line}" if before else line
        proc = subprocess.run(
            ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            pytest.fail(f"README command `{line}` exited {proc.returncode}: {proc.stderr[-500:]}")


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every `slate ...` line of the code blocks of README.md and docs/*.md,
    backslash continuations joined, comments, redirections and `&& ...` tails cut off, lines in
    usage notation (`[--flag]`, `...`) left out."""
    out: list[tuple[str, str]] = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for block in re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", text, re.S | re.M):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.strip()
                if not line.startswith("slate "):
                    continue
                line = re.split(r"\s+#\s|\s*&&\s|\s*[|>]\s", line)[0].strip()
                if "[" in line or "..." in line:
                    continue
                out.append((path.name, line))
    return out


@pytest.mark.parametrize(("where", "cmd"), documented_commands())
def test_documented_commands_parse(where: str, cmd: str) -> None:
    """Every documented command names a real subcommand and real flags with valid values (the
    ones needing Prometheus, Kubernetes or a long run are parsed, not run)."""
    import shlex

    from slate.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_args(shlex.split(cmd)[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: `{cmd}` does not parse (exit {e.code})")


def test_documented_commands_are_found() -> None:
    cmds = {c.split()[1] for _w, c in documented_commands()}
    assert {"solve", "simulate", "xds", "observe", "run", "operator"} <= cmds, cmds
