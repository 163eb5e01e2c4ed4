"""Reload a file when it changes: poll its stat signature, parse it, keep the last good value.

Polling (not inotify) keeps this portable and works with editors and `mv`-style atomic replaces,
and with Kubernetes ConfigMap volumes whose files are symlink swaps.
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


def file_signature(path: Path) -> Signature:
    """(inode, size, mtime ns) of the file the path points to now, or None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_file(
    path: Path,
    load: Callable[[Path], T],
    interval: float,
    initial: Signature,
    on_reject: Callable[[str], None] | None = None,
) -> AsyncIterator[T]:
    """Yield `load(path)` each time the file changes after the `initial` signature.

    A file that is missing or fails to load (InputError) is logged and skipped: the caller keeps
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
            reason = "file is missing"
            log.warning("%s", kv("reload_rejected", file=path, reason=reason))
            if on_reject is not None:
                on_reject(reason)
            continue
        try:
            value = load(path)
        except InputError as e:
            log.warning("%s", kv("reload_rejected", file=path, reason=str(e)))
            if on_reject is not None:
                on_reject(str(e))
            continue
        log.info("%s", kv("reloaded", file=path))
        yield value
