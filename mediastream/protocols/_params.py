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

import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidMessageError
from ._fields import text_value

__all__ = [
    "STREAM_AUTH_HEADER",
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


def parse_extra_headers(value: Any, where: str) -> dict[str, str]:
    """Plivo ``extraHeaders`` as it reaches the socket (protocols.md §3.2).

    Observed forms: a JSON object encoded as a string (SDK), ``k=v`` pairs separated by
    ``;`` (docs example) or ``,`` (XML docs), or an already-parsed object. A string that
    starts with ``{`` but is not a JSON object is malformed and rejected.
    """
    if value is None:
        return {}
    if type(value) is dict:
        return {str(k): text_value(v) for k, v in value.items()}
    if type(value) is not str:
        raise InvalidMessageError(f"{where}: expected a string")
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidMessageError(f"{where}: invalid JSON") from exc
        if type(parsed) is not dict:
            raise InvalidMessageError(f"{where}: expected a JSON object")
        return {str(k): text_value(v) for k, v in parsed.items()}
    out: dict[str, str] = {}
    for part in _SPLIT.split(text):
        key, _, val = part.partition("=")
        key = key.strip()
        if key:
            out[key] = val.strip()
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
