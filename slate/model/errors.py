"""Input errors that name the offending field: the one place every parser maps its failures.

Every user-facing input (scenario files, route files, endpoint files, TrafficPolicies) is checked
before any domain value is built; a problem is reported as one `InputError` whose `path` is the
dotted/indexed location of the field (`services.frontend.endpoints.home.calls[0].to`) and whose
`reason` says what is wrong with it. The CLI prints `str(error)` and exits with code 2.

API (parsers of any input use these, so a bad field reads the same everywhere):

- `InputError(path, reason, source=None)`; `err.with_source(file)` names the file.
- `join_path(("services", "a", "calls", 0, "to"))` -> `services.a.calls[0].to`.
- `from_validation_error(err, data)`: a pydantic `ValidationError` raised while validating `data`
  -> the InputError of its first problem (path in the user's data, message from `MESSAGES`).
- Hand-written parsers: `require(obj, key, path, kind)` for a required key of a given type and
  `finite_number(value, path)` for a number field.
- Reading files (size, encoding, YAML/JSON syntax) lives in `slate.model.files`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic is only needed by callers that validate with it
    from pydantic import ValidationError


def join_path(parts: Sequence[str | int]) -> str:
    """`("services", "a", "calls", 0, "to")` -> `services.a.calls[0].to`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class InputError(ValueError):
    """A user input is wrong at `path` because of `reason`."""

    def __init__(self, path: str, reason: str, *, source: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.reason}"

    def with_source(self, source: str) -> InputError:
        return InputError(self.path, self.reason, source=source)


MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} item(s)",
    "missing": "is required",
}
"""Pydantic error types -> the reason users read (formatted with the error's context)."""


def _data_path(loc: tuple[str | int, ...], data: Any, missing: bool) -> list[str | int]:
    """The location in the user's data: pydantic adds union-branch tags that the file lacks."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
            out.append(part)
        elif missing and i == len(loc) - 1:
            out.append(part)
    return out


def from_validation_error(err: ValidationError, data: Any) -> InputError:
    """The first problem of a pydantic validation of `data`, as an InputError."""
    errors = err.errors(include_url=False)
    first = errors[0]
    kind = first["type"]
    path = join_path(_data_path(tuple(first["loc"]), data, kind == "missing"))
    template = MESSAGES.get(kind)
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in first.get("ctx", {}).items()}
    msg = template.format(**ctx) if template else first["msg"]
    if kind != "missing":
        msg += f" (got {first['input']!r})"
    # Union types report one error per branch at the same place: count places, not errors.
    places = {join_path(_data_path(tuple(e["loc"]), data, e["type"] == "missing")) for e in errors}
    more = len(places - {path})
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InputError(path, msg)


def require(obj: Mapping[str, Any], key: str, path: str, kind: type) -> Any:
    """`obj[key]`, which must be present and of `kind` (float accepts ints, never bools)."""
    if key not in obj:
        raise InputError(f"{path}.{key}", "is required")
    value = obj[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{path}.{key}", f"must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise InputError(f"{path}.{key}", f"must be a {kind.__name__}, got {value!r}")
    return value


def finite_number(value: Any, path: str) -> float:
    """`value` as a float; InputError at `path` unless it is a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(path, f"must be a finite number, got {value!r}")
    return float(value)
