"""Structured log lines: `event=nack view=frontend@us-west nonce=7 ...` (logfmt).

`kv(...)` renders lazily, so `log.debug("%s", kv(...))` costs little when debug is off.
"""

from __future__ import annotations

import logging
from typing import Any


class kv:
    """An event name and key=value fields, rendered as one logfmt line when logged."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, **fields: Any) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        parts = [f"event={self.event}"]
        parts += [f"{k}={_value(v)}" for k, v in self.fields.items()]
        return " ".join(parts)


def _value(v: Any) -> str:
    s = str(v)
    if s and not any(c in s for c in ' "=\n\t'):
        return s
    escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


LOG_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def configure(level: str) -> None:
    """Log to stderr in logfmt at `level` (the CLI's default is warning: quiet)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
