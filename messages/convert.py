"""Strict (de)serialization of attrs messages with cattrs.

cattrs by default coerces (`"1"` becomes `1`, `1` becomes `"1"`); a command protocol must not:
a field of the wrong type is a 400 that names the field. This converter checks primitive types
exactly and turns cattrs' validation errors into one `InvalidArgument` with the field's path.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from g8os.messages.errors import InvalidArgument

T = TypeVar("T")

converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


class WrongType(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {_type_name(value)}")


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise WrongType("string", value)
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("integer", value)
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType("number", value)
    return float(value)


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise WrongType("boolean", value)
    return value


def _structure_any(value: Any, _: type) -> Any:
    return value


converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(Any, _structure_any)


def _is_list(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is list or tp is list


def _is_dict(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is dict or tp is dict


def _list_hook_factory(tp: Any) -> Any:
    args = getattr(tp, "__args__", None) or (Any,)
    element = args[0]

    def hook(value: Any, cls: Any) -> Any:
        if not isinstance(value, list):
            raise WrongType("list", value)
        out, errors = [], []
        for index, item in enumerate(value):
            try:
                out.append(converter.structure(item, element))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []),
                                 IterableValidationNote(f"@ index {index}", index, element)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"while structuring {tp!r}", errors, tp)
        return out
    return hook


def _dict_hook_factory(tp: Any) -> Any:
    inner = converter.gen_structure_mapping(tp)

    def hook(value: Any, cls: Any) -> Any:
        if not isinstance(value, dict):
            raise WrongType("object", value)
        return inner(value, cls)
    return hook


converter.register_structure_hook_factory(_is_list, _list_hook_factory)
converter.register_structure_hook_factory(_is_dict, _dict_hook_factory)


def _first_error(exc: BaseException, path: str = "") -> tuple[str, str]:
    """Walk a cattrs exception group down to the first leaf: (field path, reason)."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if hasattr(n, "name") or
                         hasattr(n, "index")), None)
            step = ""
            if note is not None:
                if hasattr(note, "name"):
                    step = f".{note.name}"
                elif hasattr(note, "index"):
                    step = f"[{note.index}]"
            return _first_error(sub, path + step)
    if isinstance(exc, KeyError):
        return path, "is required"
    if isinstance(exc, ForbiddenExtraKeysError):
        return path, f"unknown fields {sorted(exc.extra_fields)}"
    if isinstance(exc, InvalidArgument):
        return (path + (f".{exc.field}" if exc.field and not path.endswith(exc.field) else "")), exc.message
    return path, str(exc) or type(exc).__name__


def structure(data: Any, cls: type[T], *, prefix: str = "") -> T:
    """Build `cls` from JSON-like `data`; any problem is an InvalidArgument naming the field."""
    if attrs.has(cls) and not isinstance(data, dict):
        raise InvalidArgument(f"`{prefix or 'arguments'}`: expected object, got {_type_name(data)}",
                              field=prefix or "arguments")
    try:
        return converter.structure(data, cls)
    except InvalidArgument as exc:
        field = ".".join(p for p in (prefix, exc.field) if p)
        raise InvalidArgument(f"`{field}`: {exc.message}" if field else exc.message, field=field)
    except Exception as exc:  # cattrs' exception groups and plain TypeErrors from attrs
        path, reason = _first_error(exc)
        field = (prefix + path) if path.startswith(".") or not prefix else f"{prefix}.{path}"
        field = field.lstrip(".")
        raise InvalidArgument(f"`{field}`: {reason}" if field else reason, field=field) from None


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)
