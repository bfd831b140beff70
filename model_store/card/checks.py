"""The checks every model-card field goes through: each returns the value as the card keeps it
(numpy scalars made plain, keys made ints) or raises `InvalidCard` naming the field.

Also the helpers the card's records share: building a record from JSON (`record`, known keys as
fields, the rest in `extra`) and back (`dict_of`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from model_store.errors import StoreError

DIGITS = range(10)
_SHOWN = 60  # characters of a bad value quoted in an error
_T = TypeVar("_T")


class InvalidCard(StoreError):
    """A model card value that is not what its field holds; the message names the field."""


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def plain_number(value: Any) -> int | float | None:
    """`value` as a plain int or float (numpy scalars converted); None if it is not a number.

    A bool is not a number here, though Python counts it as one.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, int | float):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def fraction(value: Any, name: str) -> float:
    number = plain_number(value)
    if number is None or not 0.0 <= number <= 1.0:  # NaN fails the range too
        raise InvalidCard(f"{name} must be a number in [0, 1], got {shown(value)}")
    return number


def loss(value: Any, name: str) -> float:
    number = plain_number(value)
    if number is None or not math.isfinite(number) or number < 0:
        raise InvalidCard(f"{name} must be a finite number >= 0, got {shown(value)}")
    return number


def count(value: Any, name: str) -> int:
    number = plain_number(value)
    if not isinstance(number, int) or number < 0:
        raise InvalidCard(f"{name} must be a whole number >= 0, got {shown(value)}")
    return number


def number(value: Any, name: str) -> float:
    number = plain_number(value)
    if number is None or not math.isfinite(number):
        raise InvalidCard(f"{name} must be a finite number, got {shown(value)}")
    return number


def text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidCard(f"{name} must be a string, got {shown(value)}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidCard(f"{name} must be true or false, got {shown(value)}")
    return value


def version(value: Any, name: str) -> int:
    number = plain_number(value)
    if not isinstance(number, int) or number < 1:
        raise InvalidCard(f"{name} must be a version number >= 1, got {shown(value)}")
    return number


def json_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidCard(f"{name} must be a JSON object with string keys, got {shown(value)}")
    return dict(value)


def digit(key: Any, name: str) -> int:
    """A per-digit key: 0-9, or the string JSON makes of it ("0"-"9")."""
    number = plain_number(key)
    if isinstance(number, int) and number in DIGITS:
        return number
    if isinstance(key, str) and len(key) == 1 and key.isdigit():
        return int(key)
    raise InvalidCard(f"{name} must be keyed by digit 0-9, got key {shown(key)}")


def per_digit(value: Any, name: str, check: Any) -> dict[int, Any]:
    """A map of digit (0-9) to a value `check` accepts, keyed by int."""
    if not isinstance(value, Mapping):
        raise InvalidCard(f"{name} must be an object keyed by digit 0-9, got {shown(value)}")
    result: dict[int, Any] = {}
    for key, item in value.items():
        key_digit = digit(key, name)
        if key_digit in result:
            raise InvalidCard(f"{name} has digit {key_digit} twice")
        result[key_digit] = check(item, f"{name}[{key_digit}]")
    return dict(sorted(result.items()))


def per_name(value: Any, name: str, check: Any) -> dict[str, Any]:
    """A map of name to a value `check` accepts."""
    return {key: check(item, f"{name}[{key}]") for key, item in json_object(value, name).items()}


def optional(value: Any, name: str, check: Any) -> Any:
    return None if value is None else check(value, name)


def assign(owner: Any, name: str, value: Any) -> None:
    object.__setattr__(owner, name, value)


def check_extra(owner: Any) -> None:
    known = {item.name for item in fields(owner)} - {"extra"}
    extra = json_object(owner.extra, "extra")
    if clash := sorted(known & extra.keys()):
        raise InvalidCard(f"extra repeats a field: {', '.join(clash)}")
    assign(owner, "extra", extra)


def record(cls: type[_T], value: Any, name: str) -> _T:
    """`cls` from a JSON object: its known keys as fields, the rest as `extra`.

    InvalidCard messages from inside get `name.` in front.
    """
    if isinstance(value, cls):
        return value
    data = json_object(value, name)
    for alias, target in getattr(cls, "ALIASES", {}).items():
        if alias in data and target not in data:
            data[target] = data.pop(alias)
    attrs = [item for item in fields(cls) if item.name != "extra"]  # type: ignore[arg-type]
    required = [item.name for item in attrs if item.default is item.default_factory is MISSING]
    if missing := [key for key in required if key not in data]:
        raise InvalidCard(f"{name} has no {', '.join(missing)}")
    known = {item.name: data.pop(item.name) for item in attrs if item.name in data}
    try:
        return cls(**known, extra=data)
    except InvalidCard as exc:
        raise InvalidCard(f"{name}.{exc}") from None


def nested(owner: Any, attr: str, cls: type) -> None:
    """Field `attr` of `owner` as a `cls` (built from a dict if need be), or None."""
    value = getattr(owner, attr)
    if value is not None and not isinstance(value, cls):
        assign(owner, attr, record(cls, value, attr))


def dict_of(owner: Any, omit_none: bool = True) -> dict[str, Any]:
    """JSON form of a record: `extra` first, then each field (records and maps converted)."""
    result = dict(owner.extra)
    for item in fields(owner):
        if item.name == "extra":
            continue
        value = getattr(owner, item.name)
        if value is None and omit_none:
            continue
        result[item.name] = plain(value)
    return result


def plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
