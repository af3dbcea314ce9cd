"""JSON text frames in, Python objects out, with the close-code errors of docs/design.md §3.

``json.loads()`` spends about as long on its argument checks and two whitespace regex
matches as the C scanner spends parsing a whole 20 ms media message. :data:`scan_once`
is that scanner (the same grammar, the same objects); a frame it does not consume
entirely (leading or trailing whitespace, a BOM, any error) goes through
:func:`loads_strict`, i.e. ``json.loads()``, for the exact verdict and error message.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

from ..errors import InvalidMessageError

__all__ = ["SCAN_ERRORS", "loads_strict", "parse_json", "scan_once"]

#: ``scan_once(text, 0) -> (value, end)``; raises one of :data:`SCAN_ERRORS`.
scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types the context oddly
)
SCAN_ERRORS = (StopIteration, ValueError, RecursionError)


def loads_strict(message: str) -> Any:
    """``json.loads(message)`` with failures as :class:`InvalidMessageError` (1007)."""
    try:
        return json.loads(message)
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise InvalidMessageError(f"message: invalid JSON ({exc})") from None
    except RecursionError:
        raise InvalidMessageError("message: JSON nested too deeply") from None


def parse_json(message: str) -> Any:
    """Same result as :func:`loads_strict`, faster for frames without outer whitespace."""
    try:
        data, end = scan_once(message, 0)
    except SCAN_ERRORS:
        end = -1
    return data if end == len(message) else loads_strict(message)
