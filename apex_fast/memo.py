"""Bounded in-process caches: a dict that forgets its oldest entry when full."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def put_bounded(cache: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store `value` under `key` and return it; a cache already holding `max_entries` entries
    first drops the oldest one it stored (dicts keep insertion order)."""
    if len(cache) >= max_entries:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value
