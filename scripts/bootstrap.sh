#!/usr/bin/env bash
# Install everything slate's demo and tests need, idempotently, into .venv beside this checkout.
# Nothing is assumed pre-installed beyond python3 (>= 3.11) with venv.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
stamp="$venv/.slate-deps"
want=$(sha256sum "$root/pyproject.toml" | cut -c1-16)

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[dev]"
  echo "$want" > "$stamp"
fi
