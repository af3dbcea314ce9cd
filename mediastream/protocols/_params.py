"""Custom call parameters, however they arrived, merged into one ``str -> str`` map.

Sources, lowest precedence first (a later source overwrites a key of an earlier one):

1. URL query parameters of the WebSocket upgrade (Telnyx and Plivo deliver the query
   string; Twilio drops it, protocols.md §1.4). Pipecat Cloud's ``body`` parameter is
   base64 of a JSON object; its keys are merged in and ``body`` itself is dropped once
   decoded. A ``body`` that does not decode is kept verbatim.
2. What the provider put in the ``start`` message: Twilio ``customParameters``
   (``<Parameter>``), Telnyx ``custom_parameters``, Plivo ``extra_headers``.

The message wins because it is the more specific statement about this stream.
Reserved keys stay in the map (Pipecat's ``parse_telephony_websocket`` keeps them too);
:func:`agent_and_org` reads ``_pipecatCloudServiceHost`` / ``serviceHost`` (``agent.org``)
or a plain ``agent`` (+ ``organization``) parameter.
"""

from __future__ import annotations

import ast
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ._fields import text_value

__all__ = [
    "RAW_EXTRA_HEADERS_KEY",
    "STREAM_AUTH_HEADER",
    "ExtraHeaders",
    "agent_and_org",
    "decode_body",
    "header_value",
    "parse_extra_headers",
    "query_parameters",
]

#: Telnyx sends the Call Control ``stream_auth_token`` in this upgrade header
#: (protocols.md §2.2, §2.7).
STREAM_AUTH_HEADER = "x-telnyx-streaming-auth-token"

_SERVICE_HOST_KEYS = ("_pipecatCloudServiceHost", "serviceHost")
_SPLIT = re.compile(r"[;,]")


def decode_body(raw: str) -> dict[str, str] | None:
    """Decode Pipecat Cloud's ``body`` parameter: base64 (standard or URL-safe) of JSON.

    A ``+`` that was not percent-encoded reaches the server as a space; it is put back.
    Returns ``None`` when ``raw`` is not base64 of a JSON object.
    """
    text = raw.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        decoded = json.loads(binascii.a2b_base64(text, strict_mode=True))
    except (ValueError, RecursionError):  # binascii.Error and JSONDecodeError are ValueErrors
        return None
    if type(decoded) is not dict:
        return None
    return {str(k): text_value(v) for k, v in decoded.items()}


def query_parameters(query: Mapping[str, str] | None) -> dict[str, str]:
    """The upgrade URL's query parameters with ``body`` expanded (see module doc)."""
    if not query:
        return {}
    params = {str(k): str(v) for k, v in query.items()}
    raw = params.get("body")
    if raw is not None:
        body = decode_body(raw)
        if body is not None:
            del params["body"]
            params.update(body)
    return params


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts too."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                value = candidate
                break
    return None if value is None else str(value)


#: Key under which :func:`parse_extra_headers` keeps a value it cannot read as pairs.
RAW_EXTRA_HEADERS_KEY = "extra_headers"
#: Longest Python-style dict literal read (Plivo caps ``extraHeaders`` at 512 bytes;
#: the bound keeps ``ast.literal_eval`` cheap whatever a peer sends).
_MAX_LITERAL_CHARS = 4096
_PAIR_KEY = re.compile(r"[^\s=]+")


class ExtraHeaders(NamedTuple):
    """What :func:`parse_extra_headers` read: the parameters, and why it could not read
    them as pairs (``None`` when it could), for the caller to log once per call."""

    parameters: dict[str, str]
    problem: str | None = None


def parse_extra_headers(value: Any, where: str) -> ExtraHeaders:
    """Plivo ``extraHeaders`` as it reaches the socket (protocols.md §3.2, NOTES.md).

    Custom data must never end a call, so this never raises. Forms read:

    * an already-parsed object, or a JSON object encoded as a string;
    * a Python-style dict literal: Plivo's Python SDK renders
      ``StreamElement(extraHeaders={'ab': 'cd'})`` as ``extraHeaders="{'ab': 'cd'}"``
      (plivo-python ``tests/xml/test_streamElement.py``), read with
      :func:`ast.literal_eval` (literals only, bounded in size);
    * ``k=v`` pairs separated by ``;`` (audio-streaming reference) or ``,`` (XML
      reference); empty parts are skipped.

    Anything else (a part without ``=``, a brace that opens no dict, a number) is kept
    verbatim under :data:`RAW_EXTRA_HEADERS_KEY` with a ``problem`` saying why.
    """
    if value is None:
        return ExtraHeaders({})
    if type(value) is dict:
        return ExtraHeaders(_text_map(value))
    if type(value) is not str:
        return ExtraHeaders(
            {RAW_EXTRA_HEADERS_KEY: text_value(value)}, f"{where}: not a string, kept raw"
        )
    text = value.strip()
    if not text:
        return ExtraHeaders({})
    if text.startswith("{"):
        parsed = _dict_literal(text)
        if parsed is not None:
            return ExtraHeaders(_text_map(parsed))
        return ExtraHeaders(
            {RAW_EXTRA_HEADERS_KEY: value}, f"{where}: neither a JSON nor a dict literal, kept raw"
        )
    out: dict[str, str] = {}
    for part in _SPLIT.split(text):
        if not part.strip():
            continue
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq or not _PAIR_KEY.fullmatch(key):
            return ExtraHeaders(
                {RAW_EXTRA_HEADERS_KEY: value}, f"{where}: not k=v pairs, kept raw"
            )
        out[key] = val.strip()
    return ExtraHeaders(out)


def _dict_literal(text: str) -> dict[Any, Any] | None:
    """A JSON object or a Python dict literal, or ``None``."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
        if len(text) <= _MAX_LITERAL_CHARS:
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                parsed = None
    return parsed if type(parsed) is dict else None


def _text_map(mapping: dict[Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, val in mapping.items():
        try:
            out[str(key)] = text_value(val)
        except (TypeError, ValueError):  # a literal JSON cannot render (set, bytes)
            out[str(key)] = repr(val)
    return out


def agent_and_org(params: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Agent and organization named by the parameters, if any.

    ``_pipecatCloudServiceHost`` / ``serviceHost`` hold ``agent.org`` (Pipecat Cloud
    telephony guides); split at the first dot. Otherwise ``agent`` and ``organization``
    (or ``org``) are read as they are.
    """
    for key in _SERVICE_HOST_KEYS:
        host = params.get(key)
        if host:
            agent, dot, org = host.partition(".")
            return (agent or None), (org if dot and org else None)
    return (
        params.get("agent") or None,
        params.get("organization") or params.get("org") or None,
    )
