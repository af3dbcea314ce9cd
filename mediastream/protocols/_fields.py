"""Typed reads of JSON fields that fail with an error naming the field.

Every helper takes the parsed JSON value and a dotted ``where`` (``"start.callSid"``)
used in the message of the :class:`~mediastream.errors.InvalidMessageError` it raises
(close code 1007). Numbers are accepted as JSON numbers or as decimal strings because
the providers disagree (Twilio sends ``"2"``, Plivo ``2``; protocols.md §5.5).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidMessageError

__all__ = [
    "MAX_DIGITS",
    "as_int",
    "obj",
    "opt_int",
    "opt_obj",
    "opt_str",
    "req_str",
    "str_list",
    "string_map",
    "text_value",
]

#: Longest decimal string accepted as a number (Unix epoch ms has 13 digits).
MAX_DIGITS = 19


def obj(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a JSON object, or an error saying ``where`` is missing or mistyped."""
    if type(value) is dict:
        return value
    if value is None:
        raise InvalidMessageError(f"{where}: missing")
    raise InvalidMessageError(f"{where}: expected an object, got {_kind(value)}")


def opt_obj(value: Any, where: str) -> dict[str, Any] | None:
    """Like :func:`obj` but ``None`` (absent or JSON null) is allowed."""
    if value is None or type(value) is dict:
        return value
    raise InvalidMessageError(f"{where}: expected an object, got {_kind(value)}")


def req_str(value: Any, where: str) -> str:
    """A required, non-empty string."""
    if type(value) is str and value:
        return value
    if value is None:
        raise InvalidMessageError(f"{where}: missing")
    if type(value) is str:
        raise InvalidMessageError(f"{where}: empty")
    raise InvalidMessageError(f"{where}: expected a string, got {_kind(value)}")


def opt_str(value: Any, where: str) -> str | None:
    """An optional string; JSON null and absence both give ``None``."""
    if value is None or type(value) is str:
        return value
    raise InvalidMessageError(f"{where}: expected a string, got {_kind(value)}")


def as_int(value: Any, where: str) -> int:
    """A non-negative integer sent as a JSON number or a decimal string."""
    if type(value) is int and value >= 0:
        return value
    # isdecimal() is exactly the set int() accepts (Unicode Nd); isdigit() is wider.
    if type(value) is str and 0 < len(value) <= MAX_DIGITS and value.isdecimal():
        return int(value)
    if type(value) is float and value.is_integer() and 0 <= value < 1e19:
        return int(value)
    if value is None:
        raise InvalidMessageError(f"{where}: missing")
    raise InvalidMessageError(f"{where}: expected a non-negative integer, got {_kind(value)}")


def opt_int(value: Any, where: str) -> int | None:
    """Like :func:`as_int` but absence (or JSON null) gives ``None``.

    The first two tests are the common cases on the media hot path (Plivo sends
    numbers, Twilio and Telnyx decimal strings).
    """
    kind = type(value)
    if kind is str:
        if value.isdecimal() and len(value) <= MAX_DIGITS:
            return int(value)
    elif kind is int:
        if value >= 0:
            return value  # type: ignore[no-any-return]  # checked: exactly int
    elif value is None:
        return None
    return as_int(value, where)


def text_value(value: Any) -> str:
    """A custom-parameter value as text: strings as they are, anything else as JSON."""
    if type(value) is str:
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def string_map(value: Any, where: str) -> dict[str, str]:
    """A ``str -> str`` mapping from a JSON object or a ``[{name, value}]`` list.

    Telnyx's Call Control request takes ``custom_parameters`` as a list of
    ``{"name", "value"}`` objects and documents the stream's copy as an object
    (protocols.md §2.2); both shapes are accepted. Non-string values are kept as JSON
    text rather than rejected: they are the caller's data, not protocol.
    """
    if value is None:
        return {}
    if type(value) is dict:
        return {str(k): text_value(v) for k, v in value.items()}
    if type(value) is list:
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            entry = obj(item, f"{where}[{i}]")
            out[req_str(entry.get("name"), f"{where}[{i}].name")] = text_value(
                entry.get("value", "")
            )
        return out
    raise InvalidMessageError(f"{where}: expected an object, got {_kind(value)}")


def str_list(value: Any, where: str) -> tuple[str, ...] | None:
    """An optional list of strings (``tracks``) as a tuple."""
    if value is None:
        return None
    if type(value) is list and all(type(v) is str for v in value):
        return tuple(value)
    raise InvalidMessageError(f"{where}: expected a list of strings")


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
    }.get(type(value), type(value).__name__)
