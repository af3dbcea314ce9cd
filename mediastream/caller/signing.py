"""Sign simulated provider requests the way each provider does, so servers that check
signatures (as mediastream does by default) accept the simulated caller.

* Twilio ``X-Twilio-Signature`` (protocols.md §1.7): base64 HMAC-SHA1 over the full URL
  followed by every form parameter as ``name + value`` in sorted order; the WebSocket
  upgrade is signed over the ``wss://`` URL with no parameters.
* Plivo ``X-Plivo-Signature-V3`` (§3.7): base64 HMAC-SHA256 over the URL, ``?`` or
  ``.``, the sorted ``key + value`` POST parameters, then ``.`` + nonce.
* Telnyx ``telnyx-signature-ed25519`` (§2.7): Ed25519 over ``timestamp|body`` with the
  account's private key (``cryptography`` supplies Ed25519).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["plivo_v3_signature", "sign_webhook", "telnyx_signature", "twilio_signature"]


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    message = url + "".join(name + value for name, value in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def plivo_v3_signature(
    auth_token: str, url: str, nonce: str, params: Mapping[str, str] | None = None
) -> str:
    """``X-Plivo-Signature-V3`` for a POST to ``url`` with form ``params``."""
    parts = urlsplit(url)
    message = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    if query:
        message += "?" + "&".join(f"{k}={v}" for k, v in query)
    if params:
        message += ("." if query else "?") + "".join(k + v for k, v in sorted(params.items()))
    message += "." + nonce
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def telnyx_signature(private_key_b64: str, timestamp: str, body: bytes) -> str:
    """``telnyx-signature-ed25519`` over ``timestamp|body``.

    ``private_key_b64`` is the base64 of the 32-byte Ed25519 seed.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private_key_b64))
    return base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()


def sign_webhook(
    provider: str, secret: str, url: str, form: Mapping[str, str], body: bytes
) -> dict[str, str]:
    """The signature headers ``provider`` would put on a form POST of ``body`` to ``url``."""
    if provider == "twilio":
        return {"X-Twilio-Signature": twilio_signature(secret, url, form)}
    if provider == "plivo":
        nonce = str(secrets.randbelow(10**20)).zfill(20)
        signature = plivo_v3_signature(secret, url, nonce, form)
        return {
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-Ma-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
    timestamp = str(int(time.time()))
    return {
        "telnyx-signature-ed25519": telnyx_signature(secret, timestamp, body),
        "telnyx-timestamp": timestamp,
    }
