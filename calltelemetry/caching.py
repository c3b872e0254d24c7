"""The one kind of per-process cache: bounded in size and in age, thread-safe, fork-aware.

Every cache a process keeps (compiled webhooks, webhook snapshots, payload renderers, HTTP
pools and targets, the licence in force) is a `BoundedCache`, so none grows without bound,
each says how stale it may be, and `caches_clear()` empties them all (tests, after a rollback
reused ids).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_registry: weakref.WeakSet[BoundedCache[Any, Any]] = weakref.WeakSet()


class BoundedCache(Generic[K, V]):
    """At most `max_entries` values, each kept at most `max_age` seconds (None: no age limit).

    Full, it drops the least recently used entry. `on_evict` is called (outside the lock) with
    every value dropped by size, age or `clear()`: what holds connections closes them there.
    With `clear_in_child`, a forked child starts empty and calls nothing: the parent's sockets
    and threads are not its own to use or close.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_age: float | None = None,
        on_evict: Callable[[V], None] | None = None,
        clear_in_child: bool = False,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_age = max_age
        self.clear_in_child = clear_in_child
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        _registry.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value kept for `key`, or None when there is none or it is too old."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] > time.monotonic():
                self._entries.move_to_end(key)
                return entry[1]
            del self._entries[key]
        self._evicted([entry[1]])
        return None

    def set(self, key: K, value: V, *, max_age: float | None = None) -> None:
        """Keep `value` for `key`, for `max_age` seconds if given, else the cache's own."""
        self._put(key, value, max_age, replace=True)

    def setdefault(self, key: K, value: V) -> V:
        """The live value kept for `key`; if there is none, keep `value` and return it."""
        return self._put(key, value, None, replace=False)

    def discard(self, key: K) -> None:
        """Forget the value kept for `key`, if any."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            self._evicted([entry[1]])

    def clear(self) -> None:
        with self._lock:
            dropped = [value for _, value in self._entries.values()]
            self._entries.clear()
        self._evicted(dropped)

    def _put(self, key: K, value: V, max_age: float | None, *, replace: bool) -> V:
        age = self.max_age if max_age is None else max_age
        now = time.monotonic()
        expires = math.inf if age is None else now + age
        dropped = []
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if not replace and entry[0] > now:
                    self._entries.move_to_end(key)
                    return entry[1]
                dropped.append(entry[1])
                del self._entries[key]
            self._entries[key] = (expires, value)
            while len(self._entries) > self.max_entries:
                dropped.append(self._entries.popitem(last=False)[1][1])
        self._evicted([old for old in dropped if old is not value])
        return value

    def _evicted(self, values: list[V]) -> None:
        if self._on_evict is not None:
            for value in values:
                self._on_evict(value)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self.clear_in_child:
            self._entries.clear()


def caches_clear() -> None:
    """Empty every `BoundedCache` of this process (closing what their `on_evict` closes)."""
    for cache in list(_registry):
        cache.clear()


def _after_fork_in_child() -> None:
    for cache in list(_registry):
        cache._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
