"""Helpers shared by the protocol tests: vector loading and neutral JSON views.

Vectors live in ``tests/vectors/<provider>/<name>.json``; each names its documentary
source in ``_source``. Kinds:

``session``  ``messages`` in, ``events`` expected (as :func:`event_json` renders them);
             optional ``exchanges`` (commands after the messages) and ``options``.
``outbound`` ``messages`` to reach ``STARTED``, then ``exchanges``: a command and the
             ``wire`` messages expected (compared as parsed JSON) or an ``error`` class.
``invalid``  ``cases``: messages fed after ``start`` (``after_start``) or after
             ``before``, then one bad ``message``/``raw``; the expected error class and a
             word its message must contain.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mediastream.protocols import (
    ClearAudio,
    Command,
    MediaFormat,
    MediaStreamProtocol,
    SendAudio,
    SendDtmf,
    SendMark,
    protocol_for,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
PROVIDERS = ("twilio", "telnyx", "plivo")


def vector_files(kind: str | None = None) -> list[tuple[str, Path]]:
    """(provider, path) for every vector, optionally of one kind."""
    out = []
    for provider in PROVIDERS:
        for path in sorted((VECTORS / provider).glob("*.json")):
            if kind is None or load(path)["kind"] == kind:
                out.append((provider, path))
    return out


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def to_wire(message: Any) -> str | bytes:
    """A vector message as the WebSocket would deliver it."""
    return message if isinstance(message, str) else json.dumps(message)


def case_message(case: Mapping[str, Any]) -> str | bytes:
    """The bad message of an ``invalid`` case."""
    if "raw_bytes" in case:
        return base64.b64decode(case["raw_bytes"])
    if "raw_nested" in case:
        return "[" * case["raw_nested"] + "]" * case["raw_nested"]
    if "raw" in case:
        return str(case["raw"])
    return json.dumps(case["message"])


def options(vector: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments from a vector's ``options``."""
    opts = dict(vector.get("options", {}))
    if "outbound_format" in opts:
        opts["outbound_format"] = MediaFormat(**opts["outbound_format"])
    return opts


def new_protocol(provider: str, vector: Mapping[str, Any]) -> MediaStreamProtocol:
    return protocol_for(provider, **options(vector))


def command(spec: Mapping[str, Any]) -> Command:
    kind = spec["type"]
    if kind == "SendAudio":
        return SendAudio(base64.b64decode(spec["payload"]))
    if kind == "SendMark":
        return SendMark(spec["name"])
    if kind == "ClearAudio":
        return ClearAudio()
    if kind == "SendDtmf":
        return SendDtmf(spec["digits"])
    raise AssertionError(f"unknown command in vector: {kind}")


def neutral(value: Any) -> Any:
    """Plain JSON view of events and their parts (bytes as base64)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: neutral(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): neutral(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [neutral(v) for v in value]
    return value


def event_json(event: Any) -> dict[str, Any]:
    """An event as ``{"type": <class name>, <field>: <value>, ...}``."""
    return {"type": type(event).__name__, **neutral(event)}
