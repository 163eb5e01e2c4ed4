"""Reload a file when it changes: poll its stat signature, parse it, keep the last good value.

Polling (not inotify) keeps this portable and works with editors and `mv`-style atomic replaces,
and with Kubernetes ConfigMap volumes whose files are symlink swaps.

Every failure to read or parse a file is an `InputError` here, whatever the loader raised
(`load_safely`): invalid UTF-8, a value of the wrong type deep in the parser, nesting deep enough to
exhaust the recursion limit, a vanished file. At start-up that is one line and exit 2; in the
watcher it is logged with the reason, reported to `on_reject`, and the watcher carries on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from slate.logs import kv
from slate.model.errors import InputError

T = TypeVar("T")
log = logging.getLogger("slate.xds.reload")

Signature = tuple[int, int, int] | None

_REASON_LIMIT = 300


def file_signature(path: Path) -> Signature:
    """(inode, size, mtime ns) of the file the path points to now, or None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def describe_failure(e: BaseException) -> str:
    """A one-line reason for a loader failure that is not already an InputError."""
    if isinstance(e, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {e.start})"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, MemoryError):
        return "too large to parse"
    text = " ".join(str(e).split())[:_REASON_LIMIT]
    return f"cannot parse: {type(e).__name__}: {text}" if text else type(e).__name__


def load_safely(load: Callable[[Path], T], path: Path) -> T:
    """`load(path)`, with any exception it raises turned into an InputError naming the file."""
    try:
        return load(path)
    except InputError:
        raise
    except Exception as e:  # the loader's bugs and the parser's limits alike: one clear error
        raise InputError("", describe_failure(e), source=str(path)) from None


async def watch_file(
    path: Path,
    load: Callable[[Path], T],
    interval: float,
    initial: Signature,
    on_reject: Callable[[str], None] | None = None,
) -> AsyncIterator[T]:
    """Yield `load(path)` each time the file changes after the `initial` signature.

    A file that is missing or fails to load (any exception) is logged and skipped: the caller keeps
    serving its previous value, and the file is read again on its next change. `on_reject` gets
    the reason of each skipped change.
    """
    last = initial
    while True:
        await asyncio.sleep(interval)
        sig = file_signature(path)
        if sig == last:
            continue
        last = sig
        if sig is None:
            _reject(path, "file is missing", on_reject)
            continue
        try:
            value = load_safely(load, path)
        except InputError as e:
            _reject(path, str(e), on_reject)
            continue
        log.info("%s", kv("reloaded", file=path))
        yield value


def _reject(path: Path, reason: str, on_reject: Callable[[str], None] | None) -> None:
    log.warning("%s", kv("reload_rejected", file=path, reason=reason))
    if on_reject is not None:
        try:
            on_reject(reason)
        except Exception:  # a failing counter must not stop the watcher
            log.exception("%s", kv("reload_callback_failed", file=path))
