"""Answer documents: TwiML, TeXML and Plivo XML that connect a call to our media socket.

Built with :mod:`xml.etree.ElementTree`, which escapes ``& < > "`` and newlines in
attributes; characters XML 1.0 cannot carry at all (most C0 controls, lone surrogates,
U+FFFE/U+FFFF) are replaced with U+FFFD first, so any caller-supplied text yields a
well-formed document.

* Twilio (protocols.md §1.4): ``<Connect><Stream url>`` with ``<Parameter>`` children;
  the URL carries no query string (Twilio drops it).
* Telnyx (§2.4): the same shape plus ``bidirectionalMode="rtp"`` (the default ``mp3``
  mode cannot carry our audio, §5.1), ``bidirectionalCodec``, ``bidirectionalSamplingRate``
  and an inbound ``codec`` equal to the outbound one. TeXML documents PCMU, PCMA, G722,
  OPUS and AMR-WB here, not L16 (Call Control does list L16).
* Plivo (§3.4): ``<Stream bidirectional="true" keepCallAlive="true" contentType=...>`` with
  the URL as element text. Parameters go in ``extraHeaders``, which Plivo limits to 512
  bytes of ``[A-Za-z0-9]`` keys and values: entries outside that alphabet are dropped
  from ``extraHeaders`` (a leading ``+`` of a phone number is removed first) and travel
  in the stream URL's query string instead, which the protocol layer merges too.

Listen-only agents (a fork of the call's audio while the call goes on) get
:func:`twiml_start_stream` / :func:`texml_start_stream` (``<Start><Stream
track="both_tracks">``, protocols.md §1.4, §2.4) or :func:`plivo_listen_stream`
(``<Stream bidirectional="false" audioTrack="both" keepCallAlive="false">``, §3.4),
followed by the continuation: ``<Dial>`` to a number or SIP URI, or ``<Redirect>`` to
the URL of another document.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

__all__ = [
    "MAX_PARAMETERS",
    "PLIVO_EXTRA_HEADERS_LIMIT",
    "plivo_extra_headers",
    "plivo_listen_stream",
    "plivo_stream",
    "texml_connect_stream",
    "texml_start_stream",
    "twiml_connect_stream",
    "twiml_dial",
    "twiml_start_stream",
    "xml_text",
]

#: Most custom parameters an answer document carries (the rest are dropped and logged).
MAX_PARAMETERS = 32
MAX_NAME_LENGTH = 64
MAX_VALUE_LENGTH = 1024
#: Plivo ``extraHeaders`` limit in bytes (Plivo XML reference, ``<Stream>``).
PLIVO_EXTRA_HEADERS_LIMIT = 512

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# XML 1.0 §2.2 Char production, negated.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ALNUM = re.compile(r"[A-Za-z0-9]+")


def xml_text(value: str) -> str:
    """``value`` with every character XML 1.0 cannot represent replaced by U+FFFD."""
    return _NOT_XML_CHAR.sub("\ufffd", value)


def _serialize(root: ET.Element) -> str:
    return _DECLARATION + ET.tostring(root, encoding="unicode")


def _attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    return {name: xml_text(value) for name, value in attributes.items()}


def _connect_stream(
    attributes: dict[str, str], parameters: Mapping[str, str], status_callback: str | None
) -> str:
    """``<Response><Connect><Stream>`` with ``<Parameter>`` children: TwiML and TeXML alike."""
    return _serialize(_stream_in("Connect", attributes, parameters, status_callback))


def _stream_in(
    verb: str,
    attributes: dict[str, str],
    parameters: Mapping[str, str],
    status_callback: str | None,
) -> ET.Element:
    """``<Response><{verb}><Stream>`` with ``<Parameter>`` children (TwiML, TeXML)."""
    if status_callback:
        attributes["statusCallback"] = status_callback
        attributes["statusCallbackMethod"] = "POST"
    root = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(root, verb), "Stream", _attributes(attributes))
    for name, value in parameters.items():
        ET.SubElement(stream, "Parameter", {"name": xml_text(name), "value": xml_text(value)})
    return root


def twiml_connect_stream(
    url: str,
    parameters: Mapping[str, str],
    *,
    status_callback: str | None = None,
    name: str | None = None,
) -> str:
    """TwiML connecting the call to ``url`` bidirectionally (``<Connect><Stream>``)."""
    attributes = {"url": url}
    if name:
        attributes["name"] = name
    return _connect_stream(attributes, parameters, status_callback)


def texml_connect_stream(
    url: str,
    parameters: Mapping[str, str],
    *,
    codec: str = "PCMU",
    sample_rate: int = 8000,
    status_callback: str | None = None,
) -> str:
    """TeXML connecting the call to ``url`` with RTP-mode bidirectional audio."""
    attributes = {
        "url": url,
        "track": "inbound_track",
        "codec": codec,
        "bidirectionalMode": "rtp",
        "bidirectionalCodec": codec,
        "bidirectionalSamplingRate": str(sample_rate),
    }
    return _connect_stream(attributes, parameters, status_callback)


def plivo_stream(
    url: str,
    *,
    content_type: str,
    extra_headers: str = "",
    status_callback: str | None = None,
) -> str:
    """Plivo XML streaming the call both ways to ``url`` for as long as the socket lives."""
    root = _plivo_stream_root(url, "true", "true", "inbound", content_type, extra_headers,
                              status_callback)
    return _serialize(root)


def _plivo_stream_root(
    url: str,
    bidirectional: str,
    keep_call_alive: str,
    audio_track: str,
    content_type: str,
    extra_headers: str,
    status_callback: str | None,
) -> ET.Element:
    """``<Response><Stream ...>url</Stream></Response>`` with these attributes."""
    attributes = {
        "bidirectional": bidirectional,
        "keepCallAlive": keep_call_alive,
        "audioTrack": audio_track,
        "contentType": content_type,
    }
    if extra_headers:
        attributes["extraHeaders"] = extra_headers
    if status_callback:
        attributes["statusCallbackUrl"] = status_callback
        attributes["statusCallbackMethod"] = "POST"
    root = ET.Element("Response")
    stream = ET.SubElement(root, "Stream", _attributes(attributes))
    stream.text = xml_text(url)
    return root


def _start_stream(
    attributes: dict[str, str],
    parameters: Mapping[str, str],
    status_callback: str | None,
    continue_with: str,
    flavour: str,
) -> str:
    """``<Start><Stream track="both_tracks">`` then the continuation: TwiML and TeXML."""
    attributes["track"] = "both_tracks"
    root = _stream_in("Start", attributes, parameters, status_callback)
    _continuation(root, continue_with, flavour)
    return _serialize(root)


def _continuation(root: ET.Element, target: str, flavour: str) -> None:
    """Where the call goes on once the fork started: ``<Redirect>`` to a document URL,
    else ``<Dial>`` to a number (``<Number>``) or a SIP URI (``<Sip>``; Plivo ``<User>``).
    Nothing for an empty target: the call ends with the document."""
    target = target.strip()
    if not target:
        return
    if target.startswith(("https://", "http://")):
        ET.SubElement(root, "Redirect").text = xml_text(target)
        return
    dial = ET.SubElement(root, "Dial")
    if target.startswith("sip:"):
        child = ET.SubElement(dial, "User" if flavour == "plivo" else "Sip")
    else:
        child = ET.SubElement(dial, "Number")
        if flavour == "plivo" and target.startswith("+"):
            target = target[1:]  # Plivo writes numbers without the '+' (§3.4 examples)
    child.text = xml_text(target)


def twiml_start_stream(
    url: str,
    parameters: Mapping[str, str],
    *,
    continue_with: str = "",
    status_callback: str | None = None,
) -> str:
    """TwiML forking both tracks of the call to ``url`` (listen-only), then going on
    with ``continue_with`` (see :func:`_continuation`)."""
    return _start_stream({"url": url}, parameters, status_callback, continue_with, "twiml")


def texml_start_stream(
    url: str,
    parameters: Mapping[str, str],
    *,
    codec: str = "PCMU",
    continue_with: str = "",
    status_callback: str | None = None,
) -> str:
    """TeXML forking both tracks of the call to ``url`` (listen-only: no bidirectional
    attributes), then going on with ``continue_with``."""
    attributes = {"url": url, "codec": codec}
    return _start_stream(attributes, parameters, status_callback, continue_with, "texml")


def plivo_listen_stream(
    url: str,
    *,
    content_type: str,
    extra_headers: str = "",
    continue_with: str = "",
    status_callback: str | None = None,
) -> str:
    """Plivo XML forking both tracks to ``url`` (``bidirectional="false"
    audioTrack="both"``; ``keepCallAlive="false"`` so the next element runs at once),
    then going on with ``continue_with``."""
    root = _plivo_stream_root(url, "false", "false", "both", content_type, extra_headers,
                              status_callback)
    _continuation(root, continue_with, "plivo")
    return _serialize(root)


def plivo_extra_headers(
    parameters: Mapping[str, str], limit: int = PLIVO_EXTRA_HEADERS_LIMIT
) -> tuple[str, list[str]]:
    """``(extraHeaders value, names left out)`` for ``parameters``, in their order.

    Keys and values must be ``[A-Za-z0-9]+`` (a value may also be empty); a phone
    number's leading ``+`` is removed. Entries that do not fit the alphabet or the byte
    limit are left out, so put the important ones (the token) first.
    """
    pairs: list[str] = []
    dropped: list[str] = []
    size = 0
    for name, value in parameters.items():
        if value.startswith("+") and value[1:].isdigit():
            value = value[1:]
        if not _ALNUM.fullmatch(name) or (value and not _ALNUM.fullmatch(value)):
            dropped.append(name)
            continue
        pair = f"{name}={value}"
        extra = len(pair) + (1 if pairs else 0)
        if size + extra > limit:
            dropped.append(name)
            continue
        pairs.append(pair)
        size += extra
    return ",".join(pairs), dropped


def twiml_dial(number: str) -> str:
    """TwiML that connects the caller to ``number`` (a transfer, protocols.md §1.6)."""
    root = ET.Element("Response")
    dial = ET.SubElement(root, "Dial")
    dial.text = xml_text(number)
    return _serialize(root)


def plivo_dial(target: str) -> str:
    """Plivo XML that connects the caller to ``target`` (a number or ``sip:`` URI): the
    document a Plivo transfer's ``aleg_url`` serves (``POST /calls/{id}/transfer``)."""
    root = ET.Element("Response")
    _continuation(root, target, "plivo")
    return _serialize(root)
