"""attrs validators that raise InvalidArgument naming the field (for use in request classes)."""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import Callable
from typing import Any

import attrs

from g8os.messages.errors import InvalidArgument

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _fail(attribute: attrs.Attribute[Any], reason: str) -> None:
    raise InvalidArgument(reason, field=attribute.name)


def non_empty(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and len(value) == 0:
        _fail(attribute, "must not be empty")


def positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        _fail(attribute, f"must be positive, got {value}")


def non_negative(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        _fail(attribute, f"must not be negative, got {value}")


def at_most(limit: int) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and len(value) > limit:
            _fail(attribute, f"is too long ({len(value)} > {limit})")
    return check


def in_range(low: int, high: int) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not low <= value <= high:
            _fail(attribute, f"must be between {low} and {high}, got {value}")
    return check


def matches(pattern: str, what: str) -> Validator:
    regex = re.compile(pattern)

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not regex.fullmatch(value):
            _fail(attribute, f"must be {what}, got {value!r}")
    return check


def no_nul(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, str) and "\0" in item:
            _fail(attribute, "must not contain NUL bytes")
    if isinstance(value, dict):
        for key, val in value.items():
            if "\0" in key or (isinstance(val, str) and "\0" in val):
                _fail(attribute, "must not contain NUL bytes")


def signal_number(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value not in {int(s) for s in _signal.Signals}:
        _fail(attribute, f"is not a signal number: {value}")
