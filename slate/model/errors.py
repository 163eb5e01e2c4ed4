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
- Hand-written parsers: `require(obj, key, path, kind)` for a required key of a given type,
  `finite_number(value, path)` / `bounded_number(value, path, Bounds)` for number fields.
- Unknown keys (warnings by default): `unknown_key(path, key, known)` names the nearest known key,
  `strict_error(problems)` is the one error `--strict` raises for them.
- `quote(value)`: a value as messages show it (repr, one line, truncated): input is never echoed
  unbounded. `str(InputError)` is always one line of bounded length.
- Reading files (size, encoding, YAML/JSON syntax) lives in `slate.model.files`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


MAX_PATH_CHARS = 100
MAX_REASON_CHARS = 160
MAX_QUOTE_CHARS = 40


def _clip(text: str, limit: int) -> str:
    """`text` on one line (control characters escaped), at most `limit` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: Any, limit: int = MAX_QUOTE_CHARS) -> str:
    """`value` as an error message shows it: its repr, on one line, at most `limit` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, str | int | float | bool | None):
        return _clip(repr(value), limit)
    if isinstance(value, dict):
        return "a mapping" if value else "{}"
    if isinstance(value, list | tuple):
        return "a list" if value else "[]"
    return f"a {type(value).__name__}"


class InputError(ValueError):
    """A user input is wrong at `path` because of `reason`.

    `str()` is one line: `source: path: reason`, path and reason clipped to bounded lengths.
    """

    def __init__(self, path: str, reason: str, *, source: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        field = f"{_clip(self.path, MAX_PATH_CHARS)}: " if self.path else ""
        return f"{_clip(where, MAX_PATH_CHARS + 2)}{field}{_clip(self.reason, MAX_REASON_CHARS)}"

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
    "bool_type": "must be true or false",
    "tiny_number": "must be 0 or >= {tiny}",
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
        msg += f" (got {quote(first['input'])})"
    elif first["loc"]:
        msg += missing_hint(str(first["loc"][-1]), first["input"])
    # Union types report one error per branch at the same place: count places, not errors.
    places = {join_path(_data_path(tuple(e["loc"]), data, e["type"] == "missing")) for e in errors}
    more = len(places - {path})
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InputError(path, msg)


def nearest(key: str, known: Sequence[str]) -> str | None:
    """The known key a user most likely meant by `key` (difflib, or a prefix), or None."""
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if near:
        return near[0]
    prefixed = [k for k in known if len(key) >= 3 and (k.startswith(key) or key.startswith(k))]
    return prefixed[0] if len(prefixed) == 1 else None


def unknown_key(path: str, key: Any, known: Sequence[str]) -> InputError:
    """The warning (or, when strict, the error) for a key the format does not define."""
    near = nearest(str(key), known)
    hint = f" (did you mean {quote(near)}?)" if near else f" (known: {', '.join(known)})"
    return InputError(f"{path}.{key}" if path else str(key), f"unknown key{hint}")


def strict_error(extra: Sequence[InputError]) -> InputError:
    """The error `--strict` raises for the unknown keys `extra` (not empty)."""
    more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
    return InputError(extra[0].path, f"{extra[0].reason}{more}; --strict refuses unknown keys")


def missing_hint(key: str, parent: Any) -> str:
    """` (found 'weight')` when `parent` has a key close to the missing `key`, else ``."""
    if not isinstance(parent, Mapping) or len(parent) > 1000:
        return ""
    near = nearest(key, [k for k in parent if isinstance(k, str)])
    return f" (found {quote(near)})" if near else ""


def require(obj: Mapping[str, Any], key: str, path: str, kind: type) -> Any:
    """`obj[key]`, which must be present and of `kind` (float accepts ints, never bools)."""
    if key not in obj:
        raise InputError(f"{path}.{key}", f"is required{missing_hint(key, obj)}")
    value = obj[key]
    if kind is float:
        return finite_number(value, f"{path}.{key}")
    if not isinstance(value, kind):
        names = {str: "string", dict: "mapping", list: "list", int: "whole number"}
        what = names.get(kind, kind.__name__)
        raise InputError(f"{path}.{key}", f"must be a {what} (got {quote(value)})")
    return value


def finite_number(value: Any, path: str) -> float:
    """`value` as a float; InputError at `path` unless it is a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(path, f"must be a number (got {quote(value)})")
    if isinstance(value, int) and abs(value) > 1e300:
        raise InputError(path, f"must be a finite number (got {quote(value)})")
    if not math.isfinite(value):
        raise InputError(path, f"must be a finite number (got {quote(value)})")
    return float(value)


@dataclass(frozen=True)
class Bounds:
    """Accepted range of a number field: 0, or from `tiny` to `hi` (`lo` = 0 allows zero)."""

    hi: float
    tiny: float = 1e-6
    lo: float = 0.0

    def problem(self, x: float) -> str | None:
        """Why `x` is out of range, or None."""
        if x < self.lo:
            return f"must be >= {self.lo:g}"
        if x > self.hi:
            return f"must be <= {self.hi:g}"
        if 0 < abs(x) < self.tiny:
            return f"must be 0 or >= {self.tiny:g}"
        return None


def bounded_number(value: Any, path: str, bounds: Bounds) -> float:
    """`value` as a float within `bounds`; InputError at `path` naming the bound otherwise."""
    x = finite_number(value, path)
    problem = bounds.problem(x)
    if problem:
        raise InputError(path, f"{problem} (got {quote(value)})")
    return x
