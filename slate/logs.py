"""Structured logs: one logfmt line per event on stderr, quiet (warnings only) by default.

Call sites log a `kv` event, which renders lazily (so `log.debug("%s", kv(...))` costs little when
debug is off) as `event=nack view=frontend@us-west nonce=7`; a plain message renders as `msg=...`.
Every line starts with `ts=... level=... logger=...`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")


def quote(value: Any) -> str:
    s = str(value)
    if s and not any(ch in s for ch in ' "=\t\n'):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class kv:
    """An event name and key=value fields, rendered as one logfmt fragment when logged."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, **fields: Any) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(
            [f"event={self.event}", *(f"{k}={quote(v)}" for k, v in self.fields.items())]
        )


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        head = f"ts={ts}.{int(record.msecs):03d}Z level={level} logger={record.name}"
        if isinstance(record.msg, kv) and not record.args:
            body = str(record.msg)
        else:
            message = record.getMessage()
            body = message if message.startswith("event=") else f"msg={quote(message)}"
        if record.exc_info:
            body += f" exc={quote(self.formatException(record.exc_info))}"
        return f"{head} {body}"


def configure(level: str | int = "warning") -> None:
    """Log slate's events to stderr at `level` (a name from LEVELS, or -v count: 1 info, 2 debug).

    Idempotent: a later call (a subcommand's own --log-level) replaces the level and the handler.
    """
    if isinstance(level, int):
        name = "warning" if level <= 0 else "info" if level == 1 else "debug"
    else:
        name = level.lower()
    root = logging.getLogger("slate")
    for h in list(root.handlers):
        if getattr(h, "_slate", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    handler._slate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(name.upper())
    root.propagate = False
