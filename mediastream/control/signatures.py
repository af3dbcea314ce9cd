"""Provider request signatures: compute and verify, nothing else (no I/O, no policy).

* Twilio ``X-Twilio-Signature`` (protocols.md §1.7): base64 HMAC of the full URL followed
  by every form parameter as ``name + value`` in sorted order; HMAC-SHA1 keyed with the
  Auth Token, or the algorithm named by ``X-Twilio-Webhooks-Signature-Settings`` keyed
  with a SharedKey secret. Twilio is inconsistent about default ports, so the URL is
  tried with and without ``:443``/``:80`` (as twilio-python's ``RequestValidator``).
  JSON bodies are signed through a ``bodySHA256`` query parameter.
* Telnyx ``telnyx-signature-ed25519`` (§2.7): Ed25519 over ``timestamp|raw body`` with the
  account's public key, and a replay window on ``telnyx-timestamp``.
* Plivo ``X-Plivo-Signature-V3`` (§3.7): base64 HMAC-SHA256 of a canonical URL string
  plus ``.`` plus the nonce; the header may hold several comma-separated signatures.

Every verifier returns ``None`` when the request verifies and otherwise a short reason
(safe to log: it never contains a secret or a full expected signature). Comparisons are
constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

__all__ = [
    "FormParams",
    "load_telnyx_public_key",
    "plivo_signature_v3",
    "twilio_signature",
    "twilio_signature_algorithm",
    "verify_plivo_v3",
    "verify_telnyx",
    "verify_twilio",
]

#: Form parameters as received, repeated names allowed: ``[(name, value), ...]``.
FormParams = Sequence[tuple[str, str]]

_TWILIO_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


# ---------------------------------------------------------------------------- Twilio


def twilio_signature(
    url: str, params: FormParams, secret: str, algorithm: str = "HMAC_SHA1"
) -> str:
    """Twilio's signature of ``url`` and form ``params`` (protocols.md §1.7).

    Names sort by code point; each name's distinct values sort too (twilio-python
    de-duplicates them), and each pair is appended as ``name + value``.
    """
    digest = _TWILIO_HASHES.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"unsupported Twilio signature algorithm {algorithm!r}")
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(grouped):
        parts.extend(name + value for value in sorted(grouped[name]))
    mac = hmac.new(secret.encode("utf-8"), _utf8("".join(parts)), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def twilio_signature_algorithm(settings_header: str | None) -> tuple[str, str | None]:
    """``(algorithm, shared_key_id)`` from ``X-Twilio-Webhooks-Signature-Settings``.

    No header (or no ``algorithm=``) means the legacy Auth Token signature, HMAC-SHA1.
    """
    algorithm, key = "HMAC_SHA1", None
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "algorithm" and value:
            algorithm = value.upper()
        elif name == "key" and value:
            key = value
    return algorithm, key


def verify_twilio(
    url: str,
    params: FormParams,
    signature: str | None,
    secrets: Iterable[str],
    *,
    algorithm: str = "HMAC_SHA1",
    body: bytes | None = None,
) -> str | None:
    """Check ``X-Twilio-Signature`` against each secret; ``None`` when one matches.

    ``url`` is the URL Twilio requested (scheme, host, port, path, raw query). When it
    carries ``bodySHA256`` the raw ``body`` must hash to it and ``params`` are ignored.
    """
    if not signature:
        return "missing X-Twilio-Signature"
    if algorithm.upper() not in _TWILIO_HASHES:
        return f"unsupported signature algorithm {algorithm!r}"
    split = urlsplit(url)
    body_hash = dict(parse_qsl(split.query, keep_blank_values=True)).get("bodySHA256")
    if body_hash is not None:
        actual = hashlib.sha256(body or b"").hexdigest()
        if not hmac.compare_digest(actual, body_hash.lower()):
            return "bodySHA256 does not match the request body"
        params = ()
    candidates = _port_variants(url)
    for secret in secrets:
        for candidate in candidates:
            expected = twilio_signature(candidate, params, secret, algorithm)
            if hmac.compare_digest(expected.encode(), _header_bytes(signature)):
                return None
    return f"X-Twilio-Signature does not match {url}"


def _utf8(text: str) -> bytes:
    """UTF-8 of request text: aiohttp decodes header (and URL) bytes that are not UTF-8
    with ``surrogateescape``; a strict encode of those raised (HTTP 500, not 403)."""
    return text.encode("utf-8", "surrogateescape")


def _header_bytes(value: str) -> bytes:
    """A header value as bytes to compare (see :func:`_utf8`)."""
    return _utf8(value.strip())


def _port_variants(url: str) -> list[str]:
    # twilio-python validates the URL both without any port and with one (adding the
    # scheme's default when absent) because Twilio's own signing is inconsistent about
    # it (protocols.md §1.7 step 4). Same here, plus the URL exactly as given.
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    prefix = userinfo + "@" if userinfo else ""
    if hostport.startswith("["):  # IPv6 literal: [::1]:443
        host = hostport[: hostport.index("]") + 1]
    else:
        host = hostport.partition(":")[0]
    default = 443 if parts.scheme in ("https", "wss") else 80
    port = parts.port or default
    without = urlunsplit(parts._replace(netloc=prefix + host))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return list(dict.fromkeys((url, without, with_port)))


# ---------------------------------------------------------------------------- Telnyx


def load_telnyx_public_key(text: str) -> Ed25519PublicKey:
    """The Ed25519 key from the portal: base64 of the 32 raw bytes (or SPKI DER/PEM).

    Raises ``ValueError`` with a clear message for anything else.
    """
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) == 32:
                return Ed25519PublicKey.from_public_bytes(raw)
            key = load_der_public_key(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(
            "TELNYX_PUBLIC_KEY: expected base64 of a 32-byte Ed25519 public key"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("TELNYX_PUBLIC_KEY: not an Ed25519 public key")
    return key


def verify_telnyx(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: Ed25519PublicKey,
    *,
    now: float,
    tolerance: float = 300.0,
) -> str | None:
    """Check ``telnyx-signature-ed25519`` over ``timestamp|body`` and the replay window.

    ``body`` must be the raw bytes as received (never re-serialised JSON). A timestamp
    more than ``tolerance`` seconds old, or that far in the future, is refused.
    """
    if not signature:
        return "missing telnyx-signature-ed25519"
    if not timestamp:
        return "missing telnyx-timestamp"
    try:
        sent_at = int(timestamp.strip())
    except ValueError:
        return "telnyx-timestamp is not an integer"
    if abs(now - sent_at) > tolerance:
        return f"telnyx-timestamp is {now - sent_at:.0f} s off (window {tolerance:.0f} s)"
    try:
        raw_signature = base64.b64decode(signature.strip(), validate=True)
    except (ValueError, binascii.Error):
        return "telnyx-signature-ed25519 is not base64"
    try:
        public_key.verify(raw_signature, timestamp.strip().encode("ascii") + b"|" + body)
    except InvalidSignature:
        return "telnyx-signature-ed25519 does not verify"
    return None


# ----------------------------------------------------------------------------- Plivo


def _plivo_base(url: str) -> tuple[str, list[tuple[str, str]]]:
    split = urlsplit(url)
    base = urlunsplit((split.scheme, split.netloc, split.path, "", ""))
    return base, parse_qsl(split.query, keep_blank_values=True)


def _sorted_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return [(name, sorted(grouped[name])) for name in sorted(grouped)]


def _plivo_message(method: str, url: str, params: FormParams) -> str:
    base, query = _plivo_base(url)
    if method.upper() == "GET":
        # GET: query and request params merge into one sorted k=v&... string.
        # plivo-python updates the params dict with the query map: a name present in
        # both keeps only the query's values.
        in_query = {name for name, _ in query}
        merged = _sorted_pairs([*(p for p in params if p[0] not in in_query), *query])
        text = "&".join(f"{k}={v}" for k, values in merged for v in values)
        return base + ("?" + text if text else "")
    query_text = "&".join(f"{k}={v}" for k, values in _sorted_pairs(query) for v in values)
    body_text = "".join(k + v for k, values in _sorted_pairs(params) for v in values)
    message = base
    if query_text:
        message += "?" + query_text
    if params:
        message += ("." if query_text else "?") + body_text
    return message


def plivo_signature_v3(
    method: str, url: str, params: FormParams, nonce: str, auth_token: str
) -> str:
    """Plivo's V3 signature of a callback (plivo-python ``signature_v3``, §3.7)."""
    message = _plivo_message(method, url, params) + "." + nonce
    mac = hmac.new(auth_token.encode("utf-8"), _utf8(message), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_plivo_v3(
    method: str,
    url: str,
    params: FormParams,
    *,
    nonce: str | None,
    signatures: Sequence[str | None],
    auth_token: str,
) -> str | None:
    """Check ``X-Plivo-Signature-V3`` (and/or ``-Ma-V3``) headers; ``None`` if one matches.

    Each header may hold several comma-separated signatures (key rotation); any match
    verifies. ``-Ma-V3`` is keyed with the main account's token, so passing both headers
    lets one configured token (main or subaccount) verify either.
    """
    present = [s for s in signatures if s]
    if not present:
        return "missing X-Plivo-Signature-V3"
    if not nonce:
        return "missing X-Plivo-Signature-V3-Nonce"
    expected = plivo_signature_v3(method, url, params, nonce, auth_token).encode()
    for header in present:
        for candidate in header.split(","):
            if hmac.compare_digest(_header_bytes(candidate), expected):
                return None
    return f"X-Plivo-Signature-V3 does not match {url}"
