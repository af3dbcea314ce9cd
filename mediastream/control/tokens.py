"""Short-lived stream tokens: only a stream we answered for may start a bot.

The answer document we serve (after the provider's webhook signature verified) carries
a token for that call: a Twilio ``<Parameter name="_token">`` (Twilio drops URL query
strings, protocols.md §1.4), ``?token=`` in the Telnyx/Plivo stream URL, and a
``token`` entry in Plivo's ``extraHeaders``. A leaked or guessed stream URL without a
valid token cannot start a bot.

Token layout (all ``[0-9a-z]``, so it also fits Plivo's alphanumeric ``extraHeaders``)::

    "1" | provider letter | expiry (8 hex, Unix s) | nonce (16 hex) | MAC-A (32) | MAC-B (32)

* MAC-A = HMAC-SHA256(k_issue, version|provider|expiry|nonce)[:16]: checked before the
  WebSocket upgrade, where the call id is not known yet (403 on failure).
* MAC-B = HMAC-SHA256(k_call, version|provider|expiry|nonce|call_id)[:16]: checked once
  the provider's ``start`` names the call (close 1008). Dial-out tokens are issued before
  the provider has assigned a call id and are bound to the empty id instead.
* Tokens are single-use: redeeming one records its nonce here until it expires; with
  ``--workers`` or Redis the nonce is also spent in the shared state first
  (:meth:`StreamTokens.verify`, ``mediastream.cluster``), so a token used on one worker
  or instance is refused by every other.

Keys are derived from one secret with HMAC (distinct labels), truncated MACs keep 128
bits (RFC 2104 §5). ``sign_params``/``open_params`` reuse the secret to carry dial-out
parameters through a provider's answer URL (Plivo has no inline XML, §3.6).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping

from ..errors import AuthenticationError

__all__ = ["TOKEN_LENGTH", "StreamTokens", "looks_like_token"]

_VERSION = "1"
_PROVIDER_LETTERS = {"twilio": "t", "telnyx": "x", "plivo": "p"}
_MAC_HEX = 32
#: Length of every token this module issues.
TOKEN_LENGTH = 1 + 1 + 8 + 16 + _MAC_HEX + _MAC_HEX
_HEX = frozenset("0123456789abcdef")
_LETTERS = frozenset(_PROVIDER_LETTERS.values())


def _derive(secret: bytes, label: str) -> bytes:
    return hmac.new(secret, b"mediastream/" + label.encode("ascii"), hashlib.sha256).digest()


class StreamTokens:
    """Issue and check the per-call stream tokens described in the module docstring.

    ``secret`` keys every MAC (use the same secret in every worker); ``ttl`` is how long
    a token stays valid after issue, in seconds. ``clock`` returns Unix time.
    """

    def __init__(
        self,
        secret: bytes,
        ttl: float,
        *,
        clock: Callable[[], float] = time.time,
        max_redeemed: int = 200_000,
    ) -> None:
        if not secret:
            raise ValueError("stream token secret must not be empty")
        if ttl <= 0:
            raise ValueError("stream token ttl must be positive")
        self.ttl = float(ttl)
        self._issue_key = _derive(secret, "stream-token/issue")
        self._call_key = _derive(secret, "stream-token/call")
        self._params_key = _derive(secret, "dialout-params")
        self._clock = clock
        self._max_redeemed = max_redeemed
        self._redeemed: dict[str, int] = {}
        # Redemption may happen from worker threads in an embedder; keep it atomic.
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------- issue

    def issue(self, provider: str, call_id: str | None = None) -> str:
        """A fresh token for ``provider``'s call ``call_id`` (``None``: not known yet)."""
        letter = _letter(provider)
        expiry = f"{int(self._clock() + self.ttl) & 0xFFFFFFFF:08x}"
        nonce = secrets.token_hex(8)
        head = _VERSION + letter + expiry + nonce
        return head + self._mac_a(head) + self._mac_b(head, call_id or "")

    # ------------------------------------------------------------------------ check

    def check_issued(self, token: str, provider: str | None = None) -> None:
        """Pre-upgrade check: issued by us, for ``provider``, unexpired, not yet redeemed.

        Raises :class:`AuthenticationError` (the server answers 403).
        """
        head, _mac_b = self._parse(token, provider)
        with self._lock:
            if head[10:26] in self._redeemed:
                raise AuthenticationError("stream token already used")

    def redeem(self, token: str, provider: str, call_id: str) -> None:
        """Post-start check: as :meth:`check_issued`, plus bound to ``call_id``; then spent.

        A token issued without a call id (dial-out) is accepted for any call id.
        Raises :class:`AuthenticationError` (the server closes with 1008).
        """
        nonce, expiry = self.verify(token, provider, call_id)
        now = self._clock()
        with self._lock:
            if nonce in self._redeemed:
                raise AuthenticationError("stream token already used")
            if len(self._redeemed) >= self._max_redeemed:
                self._prune(now)
                if len(self._redeemed) >= self._max_redeemed:
                    raise AuthenticationError("too many live stream tokens")
            self._redeemed[nonce] = expiry

    def verify(self, token: str, provider: str, call_id: str) -> tuple[str, int]:
        """:meth:`redeem`'s checks without spending: ``(nonce, expiry)`` of a token that
        verifies and is bound to ``call_id`` (or to no call). A cluster spends the nonce
        in its shared state with this before the local :meth:`redeem`."""
        head, mac_b = self._parse(token, provider)
        bound = hmac.compare_digest(mac_b, self._mac_b(head, call_id))
        unbound = hmac.compare_digest(mac_b, self._mac_b(head, ""))
        if not (bound or unbound):
            raise AuthenticationError("stream token was issued for another call")
        return head[10:26], int(head[2:10], 16)

    def _prune(self, now: float) -> None:
        self._redeemed = {n: e for n, e in self._redeemed.items() if e >= now}

    def _parse(self, token: str, provider: str | None) -> tuple[str, str]:
        token = token.strip()
        if len(token) != TOKEN_LENGTH or token[0] != _VERSION:
            raise AuthenticationError("malformed stream token")
        head, mac_a, mac_b = token[:26], token[26 : 26 + _MAC_HEX], token[26 + _MAC_HEX :]
        # Every character is checked before any is encoded for a MAC: a token comes
        # from a URL or a header and may hold any text (a non-ASCII provider letter
        # once escaped as UnicodeEncodeError: HTTP 500 instead of 403).
        if not (
            head[1] in _LETTERS
            and set(head[2:]) <= _HEX
            and set(mac_a) <= _HEX
            and set(mac_b) <= _HEX
        ):
            raise AuthenticationError("malformed stream token")
        if not hmac.compare_digest(mac_a, self._mac_a(head)):
            raise AuthenticationError("stream token signature does not verify")
        if provider is not None and head[1] != _letter(provider):
            raise AuthenticationError("stream token was issued for another provider")
        if int(head[2:10], 16) < self._clock():
            raise AuthenticationError("stream token expired")
        return head, mac_b

    def _mac_a(self, head: str) -> str:
        return hmac.new(self._issue_key, head.encode("ascii"), hashlib.sha256).hexdigest()[
            :_MAC_HEX
        ]

    def _mac_b(self, head: str, call_id: str) -> str:
        message = head.encode("ascii") + b"|" + call_id.encode("utf-8")
        return hmac.new(self._call_key, message, hashlib.sha256).hexdigest()[:_MAC_HEX]

    # ------------------------------------------------------- dial-out parameter blobs

    def sign_params(self, params: Mapping[str, str], ttl: float) -> str:
        """Pack ``params`` into a URL-safe, signed, expiring string (see :meth:`open_params`)."""
        payload = {"exp": int(self._clock() + ttl), "p": dict(params)}
        raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        mac = hmac.new(self._params_key, body.encode("ascii"), hashlib.sha256).hexdigest()
        return body + "." + mac[:_MAC_HEX]

    def open_params(self, blob: str) -> dict[str, str]:
        """The parameters packed by :meth:`sign_params`; AuthenticationError if forged/stale."""
        body, _, mac = blob.partition(".")
        digest = hmac.new(self._params_key, body.encode("ascii", "replace"), hashlib.sha256)
        expected = digest.hexdigest()[:_MAC_HEX].encode("ascii")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected):
            raise AuthenticationError("dial-out parameters do not verify")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            payload = json.loads(raw)
            expiry = int(payload["exp"])
            params = payload["p"]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise AuthenticationError("dial-out parameters are malformed") from exc
        if expiry < self._clock():
            raise AuthenticationError("dial-out parameters expired")
        if not isinstance(params, dict):
            raise AuthenticationError("dial-out parameters are malformed")
        return {str(k): str(v) for k, v in params.items()}


def looks_like_token(text: str) -> bool:
    """True when ``text`` has the shape of our tokens (it may still be forged)."""
    text = text.strip()
    return len(text) == TOKEN_LENGTH and text[0] == _VERSION and text.isalnum()


def _letter(provider: str) -> str:
    try:
        return _PROVIDER_LETTERS[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}") from None


# ------------------------------------------------------------ one instance per secret

_instances: dict[tuple[bytes, float], StreamTokens] = {}
_process_secret = os.urandom(32)


def token_secret(
    stream_token_secret: str | None, credential_secrets: tuple[str | None, ...]
) -> tuple[bytes, bool]:
    """``(secret, shared)``: the configured secret, else one derived from the provider
    secrets (identical in every worker), else a random per-process one (``shared`` False).
    """
    if stream_token_secret:
        return stream_token_secret.encode("utf-8"), True
    material = [s for s in credential_secrets if s]
    if material:
        joined = "\x00".join(material).encode("utf-8")
        return hmac.new(b"mediastream/stream-token-secret", joined, hashlib.sha256).digest(), True
    return _process_secret, False


def shared_tokens(secret: bytes, ttl: float) -> StreamTokens:
    """The process-wide :class:`StreamTokens` for ``(secret, ttl)`` (redemptions shared)."""
    key = (secret, float(ttl))
    tokens = _instances.get(key)
    if tokens is None:
        tokens = _instances[key] = StreamTokens(secret, ttl)
    return tokens
