"""How the store writes: plain JSON (`encode`) through conditional writes, each repeated while
it loses to another writer (`retried`)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from model_store.errors import StoreError, WriteConflict
from model_store.metadata import to_json
from model_store.storage import Storage

_ROUNDS = 30
"""Conditional writes a change tries before giving up: each lost one means another succeeded."""
_BACKOFF_S = 0.005  # the longest random pause after the first lost round; doubles up to x64
_T = TypeVar("_T")


def retried(storage: Storage, name: str, attempt: Callable[[], _T]) -> _T:
    """`attempt()`, a conditional write of `name`, repeated while it loses to another."""
    for lost in range(_ROUNDS):
        try:
            return attempt()
        except WriteConflict:
            time.sleep(random.uniform(0, _BACKOFF_S * 2 ** min(lost, 6)))
    raise StoreError(
        f"{storage.uri(name)} kept changing: {_ROUNDS} concurrent writes won over "
        "this one; nothing changed, try again"
    )


def encode(value: Any) -> bytes:
    """`value` as the store writes JSON; StoreError if it is not plain JSON (NaN, an object)."""
    try:
        return to_json(value)
    except ValueError as exc:
        raise StoreError(f"cannot store as JSON: {exc}") from None
