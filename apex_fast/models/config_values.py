"""Typed access to the values of a model's config.json: every wrong type, missing key or value out
of range is an ApexError naming the config and the key."""

from __future__ import annotations

from typing import Any

from apex_fast.errors import ApexError

MAX_INT = 2**31 - 1
MISSING = object()


class Cfg:
    """A config dict with typed, error-reporting accessors."""

    def __init__(self, data: dict, where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, msg: str) -> ApexError:
        return ApexError(f"model config {self.where}: {msg}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, *keys: str, default: Any = MISSING, minimum: int = 1) -> int:
        for key in keys:
            value = self.data.get(key)
            if value is None:
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"{key} must be an integer, got {short_repr(value)}")
            if not minimum <= value <= MAX_INT:
                raise self.fail(f"{key} = {value} is out of range [{minimum}, {MAX_INT}]")
            return value
        if default is MISSING:
            raise self.fail(f"missing {' / '.join(keys)}")
        return default

    def bool(self, key: str, default: bool) -> bool:
        return self._typed(key, default, bool, "true or false")

    def str(self, key: str, default: str = "") -> str:
        return self._typed(key, default, str, "a string")

    def _typed(self, key: str, default: Any, kind: type, what: str) -> Any:
        """The value of `key` (`default` when absent or null); one of another type fails."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, kind):
            raise self.fail(f"{key} must be {what}, got {short_repr(value)}")
        return value

    def sub(self, key: str) -> Cfg:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"{key} must be an object")
        return Cfg(value, f"{self.where} [{key}]")


def short_repr(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def split_heads(c: Cfg, h: int, heads: int, head_dim: int | None) -> int:
    if head_dim is not None:
        return head_dim
    if h % heads:
        raise c.fail(f"hidden size {h} is not divisible by {heads} heads and no head_dim is given")
    return h // heads
