"""Input errors that name the offending field.

Every user-facing input (scenario files, route files, endpoint files, TrafficPolicies) is checked
before any domain value is built; a problem is reported as one `InputError` whose `path` is the
dotted/indexed location of the field (`services.frontend.endpoints.home.calls[0].to`) and whose
`reason` says what is wrong with it. The CLI prints `str(error)` and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Sequence


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
