"""The startup heap is frozen: out of later collections, its cyclic garbage freed first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.heap import FROZEN_OBJECTS, freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


def test_live_objects_leave_the_collected_generations_and_cyclic_garbage_is_freed_first(
    unfrozen_after: None,
) -> None:
    kept = _Node()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None  # a cycle: still there until a collection
    frozen = freeze_startup_heap()
    assert gone() is None, "startup's cyclic garbage was frozen instead of freed"
    assert frozen == gc.get_freeze_count() > 0
    assert FROZEN_OBJECTS._value.get() == frozen
    assert not any(o is kept for o in gc.get_objects()), "a live object is still collected"
    after = _Node()
    assert any(o is after for o in gc.get_objects()), "objects built later must be collected"
