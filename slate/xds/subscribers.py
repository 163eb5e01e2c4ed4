"""Who listens to what: the watcher bookkeeping every xDS cache shares.

A `Subscribers` maps a key (a `(view, name)` pair, a name, or a view for wildcard subscriptions)
to the watchers (streams) that asked for it. An entry goes as soon as its last watcher leaves, so
a cache can tell "nobody asks for this any more" by membership alone and keeps nothing for names
a stream subscribed to once (client-chosen names must not pile up).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")  # a watcher: hashed by identity (a Protocol type cannot be bound to Hashable)


class Subscribers(Generic[K, W]):
    def __init__(self) -> None:
        self._by_key: dict[K, set[W]] = {}

    def add(self, key: K, watcher: W) -> None:
        got = self._by_key.get(key)
        if got is None:
            got = self._by_key[key] = set()
        got.add(watcher)

    def discard(self, key: K, watcher: W) -> bool:
        """Remove `watcher` from `key`; True when that left `key` with no watcher (and gone)."""
        got = self._by_key.get(key)
        if got is None:
            return False
        got.discard(watcher)
        if got:
            return False
        del self._by_key[key]
        return True

    def of(self, key: K) -> Collection[W]:
        """The watchers of `key` (empty when none); do not modify."""
        return self._by_key.get(key, ())

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[K]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def items(self) -> Iterator[tuple[K, set[W]]]:
        return iter(self._by_key.items())
