"""The core's one least-recently-used store: values kept in memory up to a byte budget, the
least recently used dropped first (the run-local query cache, ``data.cache.MemoryCache``, and a
latent target's encoded images, ``plugin.targets.VaeLatentTarget``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any


def tensor_bytes(value: Any) -> int:
    """The bytes of a tensor's elements (``numel * element_size``)."""
    return int(value.numel()) * int(value.element_size())


class LRU:
    """Values by key, at most ``max_bytes`` of them (0: no cap; ``size(value)`` counts a value's
    bytes). ``get`` makes a key the most recently used; ``put`` adds or replaces one as the most
    recently used and, unless told not to, drops the least recently used values until the total
    is within the cap again. The last value is never dropped, however large (a store that holds
    nothing would make its caller compute everything twice)."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] = tensor_bytes):
        self.max_bytes = int(max_bytes)
        self.size = size
        self.bytes = 0
        self.evicted = 0
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any | None:
        """The value of ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: Any, trim: bool = True) -> None:
        """Keep ``value`` under ``key`` as the most recently used; with ``trim`` (the default)
        drop the least recently used values past the cap (``trim=False``: the caller calls
        :meth:`trim` once it has read what it just stored)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= self.size(old)
        self._items[key] = value
        self.bytes += self.size(value)
        if trim:
            self.trim()

    def trim(self, max_bytes: int | None = None) -> int:
        """Drop the least recently used values until at most ``max_bytes`` (default: the cap;
        0: no cap) are kept, never the last one; return how many were dropped."""
        cap = self.max_bytes if max_bytes is None else int(max_bytes)
        dropped = 0
        while cap and self.bytes > cap and len(self._items) > 1:
            _, value = self._items.popitem(last=False)
            self.bytes -= self.size(value)
            dropped += 1
        self.evicted += dropped
        return dropped

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        """The keys, least recently used first."""
        return iter(self._items)
