"""Dial-in as the provider does it: POST the incoming-call webhook, read the answer
document (TwiML, TeXML or Plivo XML) and find the stream to open.

protocols.md §1.4-1.5 (Twilio), §2.4-2.5 (Telnyx TeXML), §3.4-3.5 (Plivo). The simulator
follows the answer document the way the provider would: Twilio drops any query string from
``<Stream url>`` (§1.4, error 31920), relative URLs resolve against the webhook URL, and the
stream's parameters (``<Parameter>`` / ``extraHeaders``) travel in ``start``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import aiohttp

from mediastream.protocols.events import MediaFormat, ProviderName

from .dialects import StreamIdentity
from .signing import sign_webhook, twilio_signature

__all__ = ["AnswerError", "StreamTarget", "fetch_answer", "parse_answer", "webhook_form"]

log = logging.getLogger(__name__)

#: Twilio caps TwiML at 64 kB (error 11750), Plivo its XML at 100 kB (§3.4).
MAX_ANSWER_BYTES = 100 * 1024


class AnswerError(Exception):
    """The webhook failed or its answer document starts no usable stream."""


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where to stream and how, as the answer document (or the user) described it.

    ``inbound``/``outbound`` are ``None`` where the document leaves the choice to the
    call (the simulator's ``--codec``/``--rate``).
    """

    url: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    inbound: MediaFormat | None = None
    outbound: MediaFormat | None = None
    bidirectional: bool = True
    warnings: tuple[str, ...] = ()
    #: Extra headers for the WebSocket upgrade (Twilio's upgrade signature).
    headers: Mapping[str, str] = field(default_factory=dict)


def webhook_form(provider: ProviderName, identity: StreamIdentity) -> dict[str, str]:
    """The form fields of the provider's incoming-call webhook (first request)."""
    if provider == "twilio":
        return {
            "AccountSid": identity.account_id,
            "ApiVersion": "2010-04-01",
            "CallSid": identity.call_id,
            "CallStatus": "ringing",
            "Called": identity.to_number,
            "Caller": identity.from_number,
            "Direction": "inbound",
            "From": identity.from_number,
            "To": identity.to_number,
        }
    if provider == "telnyx":
        return {
            "AccountSid": identity.account_id,
            "CallSid": identity.call_id,
            "CallSidLegacy": identity.call_id,
            "CallStatus": "ringing",
            "ConnectionId": "1",
            "Direction": "inbound",
            "From": identity.from_number,
            "To": identity.to_number,
        }
    return {
        "CallUUID": identity.call_id,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": identity.from_number,
        "To": identity.to_number,
    }


async def fetch_answer(
    session: aiohttp.ClientSession,
    url: str,
    provider: ProviderName,
    identity: StreamIdentity,
    *,
    secret: str | None = None,
    timeout: float = 10.0,
) -> StreamTarget:
    """POST the incoming-call webhook to ``url`` and parse the answer document.

    ``secret`` signs the request (Twilio/Plivo auth token, Telnyx base64 Ed25519 seed).
    Raises :class:`AnswerError` on any failure.
    """
    form = webhook_form(provider, identity)
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if secret:
        headers.update(sign_webhook(provider, secret, url, form, body))
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            text = await response.content.read(MAX_ANSWER_BYTES + 1)
            if response.status != 200:
                raise AnswerError(f"webhook: HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise AnswerError(f"webhook: {type(exc).__name__}: {exc}") from None
    if len(text) > MAX_ANSWER_BYTES:
        raise AnswerError("webhook: answer document larger than 100 kB")
    target = parse_answer(text.decode("utf-8", "replace"), provider, base_url=url)
    if provider == "twilio" and secret:
        # §1.7: Twilio signs the upgrade GET over the wss:// URL with no parameters.
        return replace(
            target, headers={"X-Twilio-Signature": twilio_signature(secret, target.url)}
        )
    return target


def _ws_url(raw: str, base_url: str) -> str:
    url = urljoin(base_url, raw.strip())
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise AnswerError(f"stream URL {raw!r} is not a WebSocket URL")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_answer(document: str, provider: ProviderName, *, base_url: str = "") -> StreamTarget:
    """The stream an answer document starts. Raises :class:`AnswerError` if none."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise AnswerError(f"answer document is not XML: {exc}") from None
    if _strip(root.tag) != "Response":
        raise AnswerError(f"answer document root is <{_strip(root.tag)}>, not <Response>")
    if provider == "plivo":
        return _parse_plivo(root, base_url)
    return _parse_twiml(root, provider, base_url)


def _parse_twiml(root: ET.Element, provider: ProviderName, base_url: str) -> StreamTarget:
    for verb in root:
        name = _strip(verb.tag)
        if name in ("Hangup", "Reject", "Redirect"):
            raise AnswerError(f"answer document has <{name}> before any stream")
        if name not in ("Connect", "Start"):
            continue
        stream = next((c for c in verb if _strip(c.tag) == "Stream"), None)
        if stream is None:
            continue
        raw = stream.get("url")
        if not raw:
            raise AnswerError("<Stream> has no url")
        warnings: list[str] = []
        url = _ws_url(raw, base_url)
        parts = urlsplit(url)
        if provider == "twilio" and parts.query:
            # §1.4: Twilio does not deliver a query string (error 31920 lists it).
            warnings.append("Twilio drops the <Stream url> query string (31920)")
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        params = {
            p.get("name", ""): p.get("value", "")
            for p in stream
            if _strip(p.tag) == "Parameter" and p.get("name")
        }
        bidirectional = name == "Connect"
        inbound = outbound = None
        if provider == "telnyx":
            inbound, outbound, bidirectional = _telnyx_formats(stream, bidirectional, warnings)
        elif name == "Connect" and stream.get("track") not in (None, "inbound_track"):
            warnings.append(f"<Connect><Stream track={stream.get('track')!r}> is unusual")
        return StreamTarget(url, params, inbound, outbound, bidirectional, tuple(warnings))
    raise AnswerError("answer document starts no <Stream>")


def _telnyx_formats(
    stream: ET.Element, bidirectional: bool, warnings: list[str]
) -> tuple[MediaFormat | None, MediaFormat | None, bool]:
    # §2.4: codec = audio Telnyx sends; bidirectionalCodec/SamplingRate = audio it accepts.
    inbound: MediaFormat | None = None
    codec = (stream.get("codec") or "default").upper()
    if codec in ("PCMU", "PCMA"):
        inbound = MediaFormat("pcmu" if codec == "PCMU" else "pcma", 8000)
    elif codec == "L16":
        inbound = MediaFormat("l16", 16000, byteorder="big")
    elif codec != "DEFAULT":
        raise AnswerError(f"the simulator cannot send Telnyx codec {codec}")
    mode = stream.get("bidirectionalMode", "mp3")
    if bidirectional and mode != "rtp":
        # §2.3: mp3 mode (the default) ignores raw audio; nothing useful comes back.
        warnings.append(f"bidirectionalMode={mode!r}: Telnyx would not play raw audio back")
        bidirectional = False
    out_codec = (stream.get("bidirectionalCodec") or "PCMU").upper()
    rate = int(stream.get("bidirectionalSamplingRate") or 8000)
    if out_codec in ("PCMU", "PCMA"):
        outbound = MediaFormat("pcmu" if out_codec == "PCMU" else "pcma", rate)
    elif out_codec == "L16":
        outbound = MediaFormat("l16", rate, byteorder="big")
    else:
        raise AnswerError(f"the simulator cannot play Telnyx bidirectionalCodec {out_codec}")
    return inbound, outbound, bidirectional


def _parse_plivo(root: ET.Element, base_url: str) -> StreamTarget:
    for verb in root:
        name = _strip(verb.tag)
        if name in ("Hangup", "Redirect"):
            raise AnswerError(f"answer document has <{name}> before any stream")
        if name != "Stream":
            continue
        raw = (verb.text or "").strip()
        if not raw:
            raise AnswerError("<Stream> has no URL text")
        warnings: list[str] = []
        url = _ws_url(raw, base_url)
        bidirectional = (verb.get("bidirectional") or "false").lower() == "true"
        if bidirectional and verb.get("keepCallAlive", "false").lower() != "true":
            warnings.append("keepCallAlive is not true: Plivo would continue the XML at once")
        content_type = verb.get("contentType")
        fmt: MediaFormat | None = None
        if content_type:
            fmt = _plivo_format(content_type)
        params: dict[str, str] = {}
        for pair in (verb.get("extraHeaders") or "").replace(";", ",").split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                params[key.strip()] = value.strip()
        return StreamTarget(url, params, fmt, fmt, bidirectional, tuple(warnings))
    raise AnswerError("answer document starts no <Stream>")


def _plivo_format(content_type: str) -> MediaFormat:
    kind, _, rate_part = content_type.partition(";")
    rate = 8000
    if rate_part.strip().startswith("rate="):
        rate = int(rate_part.strip()[5:])
    kind = kind.strip()
    if kind == "audio/x-mulaw" and rate == 8000:
        return MediaFormat("pcmu", 8000)
    if kind == "audio/x-l16" and rate in (8000, 16000):
        return MediaFormat("l16", rate, byteorder="little")
    raise AnswerError(f"Plivo contentType {content_type!r} is not one Plivo supports")
