"""The bounded caches' eviction (apex_fast.memo.put_bounded) and the shared at-least check."""

import pytest

from apex_fast.errors import ApexError, check_at_least
from apex_fast.memo import put_bounded


def test_put_bounded_drops_the_oldest_entry_when_full() -> None:
    cache: dict[str, int] = {}
    for i, key in enumerate("abc"):
        assert put_bounded(cache, key, i, 2) == i
        assert len(cache) <= 2
    assert list(cache) == ["b", "c"]  # "a", stored first, went first
    put_bounded(cache, "d", 3, 2)
    assert cache == {"c": 2, "d": 3}


def test_check_at_least_message_names_the_value() -> None:
    check_at_least("--prompt-len", 1, 1)
    with pytest.raises(ApexError, match=r"^--prompt-len must be at least 1, got 0$"):
        check_at_least("--prompt-len", 0, 1)
    with pytest.raises(ApexError, match=r"^row 3: output_len must be at least 0, got -2$"):
        check_at_least("row 3: output_len", -2.0, 0)
