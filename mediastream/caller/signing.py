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
import secrets
import time
from collections.abc import Mapping

from mediastream.control import signatures

__all__ = ["plivo_v3_signature", "sign_webhook", "telnyx_signature", "twilio_signature"]


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with form ``params``.

    The server's own signer (:func:`mediastream.control.signatures.twilio_signature`),
    which test_control_signatures checks against Twilio's SDK.
    """
    return signatures.twilio_signature(url, list((params or {}).items()), auth_token)


def plivo_v3_signature(
    auth_token: str, url: str, nonce: str, params: Mapping[str, str] | None = None
) -> str:
    """``X-Plivo-Signature-V3`` for a POST to ``url`` with form ``params``
    (:func:`mediastream.control.signatures.plivo_signature_v3`)."""
    return signatures.plivo_signature_v3(
        "POST", url, list((params or {}).items()), nonce, auth_token
    )


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
