"""Reading the user's input files: every failure becomes one InputError naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from slate.model.errors import InputError

T = TypeVar("T")


def read_document(path: str | Path, what: str, fmt: Literal["yaml", "json"]) -> Any:
    """The parsed YAML or JSON document at `path` (`what` names the file kind in errors)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError("", f"cannot read {what}: {e.strerror}", source=source) from None
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(
                "", f"not valid JSON: {e.msg} at line {e.lineno}", source=source
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot parse"
        raise InputError("", f"not valid YAML: {problem}{where}", source=source) from None


def load_document(
    path: str | Path, what: str, fmt: Literal["yaml", "json"], parse: Callable[[Any], T]
) -> T:
    """`parse` the document at `path`, with the file named in any InputError it raises."""
    data = read_document(path, what, fmt)
    try:
        return parse(data)
    except InputError as e:
        raise e.with_source(str(path)) from None
