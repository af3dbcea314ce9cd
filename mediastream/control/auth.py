"""Who may talk to us: the authentication policy for webhooks and media streams.

Secure by default: when any provider signing credential is configured
(``TWILIO_AUTH_TOKEN``, ``TWILIO_WEBHOOK_SIGNING_SECRET``, ``TELNYX_PUBLIC_KEY``,
``PLIVO_AUTH_TOKEN``), or ``MEDIASTREAM_REQUIRE_AUTH=true``, every provider request is
authenticated: webhooks of a provider whose signing credential is missing are refused,
and every media stream needs a stream token we issued (an answer document or a dial-out
of ours), whatever the provider. With none configured nothing is checked, and
:func:`auth_warnings` says so loudly at start-up.

=====================  ===============================================  ==============
request                check                                            on failure
=====================  ===============================================  ==============
answer / status hooks  provider signature (signatures.py)               HTTP 403
media upgrade          Twilio: X-Twilio-Signature over the wss URL;     HTTP 403
                       ``?token=`` (or header) when present
stream ``start``       stream token (tokens.py) bound to the call id,   close 1008
                       single use
=====================  ===============================================  ==============

Everything raises :class:`~mediastream.errors.AuthenticationError` with a reason that is
safe to log (no secrets); the server maps it to 403 or close code 1008.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..config import Config
from ..errors import AuthenticationError
from ..protocols.events import CallInfo
from .signatures import (
    load_telnyx_public_key,
    twilio_signature_algorithm,
    verify_plivo_v3,
    verify_telnyx,
    verify_twilio,
)
from .tokens import StreamTokens, looks_like_token, shared_tokens, token_secret
from .urls import find_header, public_origin

__all__ = [
    "STREAM_TOKEN_PARAMETERS",
    "WebhookRequest",
    "auth_enabled",
    "auth_warnings",
    "check_media_upgrade",
    "check_stream_start",
    "provider_can_verify",
    "stream_tokens",
    "token_to_claim",
    "verify_webhook",
]

logger = logging.getLogger("mediastream.control.auth")

#: Custom-parameter names that carry our stream token (the server may hide them from bots).
STREAM_TOKEN_PARAMETERS = ("_token", "token")
_TELNYX_TOKEN_HEADER = "x-telnyx-streaming-auth-token"
_PROVIDERS = ("twilio", "telnyx", "plivo")


def auth_enabled(config: Config) -> bool:
    """True when provider requests must authenticate (see the module docstring)."""
    if config.require_auth is not None:
        return config.require_auth
    return config.credentials.any_configured


def provider_can_verify(config: Config, provider: str) -> bool:
    """True when ``provider``'s signing credential is configured (and parses)."""
    c = config.credentials
    if provider == "twilio":
        return bool(c.twilio_auth_token or c.twilio_webhook_signing_secret)
    if provider == "telnyx":
        return _telnyx_key(c.telnyx_public_key) is not None
    if provider == "plivo":
        return bool(c.plivo_auth_token)
    return False


@functools.lru_cache(maxsize=8)
def _telnyx_key(text: str | None) -> Ed25519PublicKey | None:
    if not text:
        return None
    try:
        return load_telnyx_public_key(text)
    except ValueError:
        return None


def stream_tokens(config: Config) -> StreamTokens:
    """The process-wide token issuer/checker for ``config`` (secret per module tokens)."""
    secret, _shared = token_secret(config.stream_token_secret, _credential_secrets(config))
    return shared_tokens(secret, config.stream_token_ttl)


def _credential_secrets(config: Config) -> tuple[str | None, ...]:
    # Only secrets: the Telnyx public key is public and must not key anything.
    c = config.credentials
    return (
        c.twilio_auth_token,
        c.twilio_webhook_signing_secret,
        c.telnyx_api_key,
        c.plivo_auth_token,
    )


def auth_warnings(config: Config) -> list[str]:
    """What the server should log at start-up about authentication and public URLs."""
    warnings: list[str] = []
    c = config.credentials
    if not auth_enabled(config):
        if config.require_auth is False:
            warnings.append(
                "provider requests are NOT authenticated (MEDIASTREAM_REQUIRE_AUTH=false): "
                "anyone who can reach this server can fetch answer documents and start bots"
            )
        else:
            warnings.append(
                "provider requests are NOT authenticated: no provider signing credential is "
                "configured (TWILIO_AUTH_TOKEN, TELNYX_PUBLIC_KEY, PLIVO_AUTH_TOKEN), so anyone "
                "who can reach this server can fetch answer documents and start bots"
            )
    else:
        names = {
            "twilio": "TWILIO_AUTH_TOKEN",
            "telnyx": "TELNYX_PUBLIC_KEY",
            "plivo": "PLIVO_AUTH_TOKEN",
        }
        if c.telnyx_public_key and _telnyx_key(c.telnyx_public_key) is None:
            warnings.append(
                "TELNYX_PUBLIC_KEY is not base64 of a 32-byte Ed25519 key: Telnyx requests "
                "will be refused"
            )
        for provider in _PROVIDERS:
            if not provider_can_verify(config, provider) and not (
                provider == "telnyx" and c.telnyx_public_key
            ):
                warnings.append(
                    f"{provider} webhooks will be refused: {names[provider]} is not set while "
                    "request authentication is on"
                )
        _secret, shared = token_secret(config.stream_token_secret, _credential_secrets(config))
        if not shared and config.workers > 1:
            warnings.append(
                "stream tokens use a per-process secret but workers > 1: set "
                "MEDIASTREAM_STREAM_TOKEN_SECRET so every worker accepts every token"
            )
    if not config.public_url:
        warnings.append(
            "MEDIASTREAM_PUBLIC_URL is not set: stream URLs and signature checks use the "
            "request's Host header; set it to the https:// URL providers reach this server at"
        )
    elif urlsplit(config.public_url).scheme not in ("https", "http"):
        warnings.append(f"MEDIASTREAM_PUBLIC_URL {config.public_url!r} is not an http(s) URL")
    elif urlsplit(config.public_url).scheme == "http":
        warnings.append(
            "MEDIASTREAM_PUBLIC_URL is http://: providers connect only to https:// and wss:// "
            "URLs (fine for local tests)"
        )
    return warnings


# ------------------------------------------------------------------------- webhooks


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An HTTP request from a provider, as the verifiers need it.

    ``urls`` are the candidate public URLs it may have been signed for (raw query
    included; see urls.py), ``form`` the form parameters of a urlencoded POST in order.
    """

    method: str
    urls: Sequence[str]
    headers: Mapping[str, str]
    body: bytes = b""
    form: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)


def verify_webhook(
    config: Config, provider: str, request: WebhookRequest, *, now: float | None = None
) -> None:
    """Authenticate a provider webhook; no-op when authentication is off.

    Raises :class:`AuthenticationError` with the reason.
    """
    if not auth_enabled(config):
        return
    c = config.credentials
    reason: str | None
    if provider == "twilio":
        reason = _verify_twilio(config, request.urls, request.form, request.headers, request.body)
    elif provider == "telnyx":
        key = _telnyx_key(c.telnyx_public_key)
        if key is None:
            raise AuthenticationError("telnyx: TELNYX_PUBLIC_KEY is not set or not valid")
        reason = verify_telnyx(
            request.body,
            request.header("telnyx-signature-ed25519"),
            request.header("telnyx-timestamp"),
            key,
            now=time.time() if now is None else now,
            tolerance=config.telnyx_webhook_tolerance,
        )
    elif provider == "plivo":
        if not c.plivo_auth_token:
            raise AuthenticationError("plivo: PLIVO_AUTH_TOKEN is not set")
        reason = "no candidate URL"
        for url in request.urls:
            reason = verify_plivo_v3(
                request.method,
                url,
                request.form,
                nonce=request.header("x-plivo-signature-v3-nonce"),
                signatures=[
                    request.header("x-plivo-signature-v3"),
                    request.header("x-plivo-signature-ma-v3"),
                ],
                auth_token=c.plivo_auth_token,
            )
            if reason is None:
                break
    else:
        raise AuthenticationError(f"unknown provider {provider!r}")
    if reason is not None:
        raise AuthenticationError(f"{provider}: {reason}")


def _verify_twilio(
    config: Config,
    urls: Sequence[str],
    form: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str | None:
    c = config.credentials
    settings = find_header(headers, "x-twilio-webhooks-signature-settings")
    algorithm, key_id = twilio_signature_algorithm(settings)
    if key_id is not None:
        # Signed with a SharedKey (Webhooks configuration API), not the Auth Token.
        if not c.twilio_webhook_signing_secret:
            return f"signed with SharedKey {key_id} but TWILIO_WEBHOOK_SIGNING_SECRET is not set"
        secrets = [s.strip() for s in c.twilio_webhook_signing_secret.split(",") if s.strip()]
    elif c.twilio_auth_token:
        secrets = [c.twilio_auth_token]
    else:
        return "TWILIO_AUTH_TOKEN is not set"
    signature = find_header(headers, "x-twilio-signature")
    reason: str | None = "no candidate URL"
    for url in urls:
        reason = verify_twilio(url, form, signature, secrets, algorithm=algorithm, body=body)
        if reason is None:
            return None
    return reason


# ----------------------------------------------------------------------- media socket


def check_media_upgrade(
    config: Config,
    *,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    public_url: str | None,
    mount_prefix: str = "",
) -> None:
    """Authenticate a media WebSocket upgrade before accepting it (refuse with 403).

    ``path`` is the request path (a ``?query`` suffix is allowed and used verbatim for
    Twilio's signature), ``query`` the parsed query, ``headers`` the upgrade headers (any
    case), ``public_url`` the server's idea of its public base URL when
    ``config.public_url`` is unset (else ``None``: derived from the headers),
    ``mount_prefix`` the path an ASGI application serving ``path`` is mounted at (part of
    the URL the provider signed).

    * Twilio (when its credentials are configured): ``X-Twilio-Signature`` must sign the
      ``wss://`` URL with no parameters.
    * Telnyx, Plivo (and provider-less ``/ws``): a token in ``?token=``,
      ``x-telnyx-streaming-auth-token`` or ``Authorization: Bearer`` must be one we
      issued, unexpired and unused. Without one the upgrade proceeds and
      :func:`check_stream_start` decides (Plivo may carry it in ``extraHeaders`` only).
    """
    if not auth_enabled(config):
        return
    raw_path, _, raw_query = path.partition("?")
    provider = _provider_of(raw_path)
    if provider == "twilio" and provider_can_verify(config, "twilio"):
        if not raw_query and query:
            raw_query = urlencode(list(query.items()))
        target = raw_path + ("?" + raw_query if raw_query else "")
        origin = public_origin(
            config.public_url or public_url,
            config.trust_forwarded,
            scheme="http",
            headers=headers,
        )
        if origin is None:
            raise AuthenticationError("twilio: cannot rebuild the public URL (no Host header)")
        origin = origin.below(mount_prefix)
        reason = _verify_twilio(config, origin.ws_urls(target), (), headers, b"")
        if reason is not None:
            raise AuthenticationError(f"twilio: media upgrade: {reason}")
        return
    tokens = stream_tokens(config)
    # ``?token=`` is ours by construction of our stream URLs: always checked. A header
    # token is checked only when it has our shape (Telnyx's own stream_auth_token, set
    # by someone else, is left for check_stream_start to weigh against the others).
    query_token = query.get("token")
    if query_token:
        tokens.check_issued(query_token, provider)
    for token in _header_tokens(headers):
        if looks_like_token(token):
            tokens.check_issued(token, provider)


def check_stream_start(
    config: Config,
    call: CallInfo,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Authenticate a stream once ``start`` described the call (refuse with close 1008).

    Looks for our stream token in ``query``/``headers`` of the upgrade when given, then
    in the call's custom parameters (``_token``, ``token``: Twilio ``<Parameter>``,
    Telnyx parameters or query, Plivo ``extraHeaders``). The token must verify, be bound
    to this call (or issued at dial-out, before the call had an id) and unused; it is
    then spent.
    """
    if not auth_enabled(config):
        return
    candidates = _candidates(call, query, headers)
    tokens = stream_tokens(config)
    failure: AuthenticationError | None = None
    for token in candidates:
        try:
            tokens.redeem(token, call.provider, call.call_id)
        except AuthenticationError as exc:
            # Keep looking: one of several places may hold someone else's token.
            failure = failure or exc
            continue
        return
    if failure is None:
        raise AuthenticationError(
            f"{call.provider} call {call.call_id}: no stream token "
            "(streams must come from an answer document this server issued)"
        )
    raise AuthenticationError(f"{call.provider} call {call.call_id}: {failure}")


def token_to_claim(
    config: Config,
    call: CallInfo,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[str, int] | None:
    """``(nonce, expiry)`` of the stream token :func:`check_stream_start` would spend,
    for spending it in shared state first (several workers or instances); ``None`` when
    auth is off or no candidate verifies (the check itself then says why)."""
    if not auth_enabled(config):
        return None
    candidates = _candidates(call, query, headers)
    tokens = stream_tokens(config)
    for token in candidates:
        try:
            return tokens.verify(token, call.provider, call.call_id)
        except AuthenticationError:
            continue
    return None


def _candidates(
    call: CallInfo, query: Mapping[str, str] | None, headers: Mapping[str, str] | None
) -> list[str]:
    """Where our stream token may be, in order, once each."""
    found = [
        *((query or {}).get(name) for name in ("token",)),
        *_header_tokens(headers or {}),
        *(call.custom_parameters.get(name) for name in STREAM_TOKEN_PARAMETERS),
    ]
    return list(dict.fromkeys(t for t in found if t))


def _header_tokens(headers: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    telnyx = find_header(headers, _TELNYX_TOKEN_HEADER)
    if telnyx:
        found.append(telnyx.strip())
    scheme, _, value = (find_header(headers, "authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip())
    return found


def _provider_of(path: str) -> str | None:
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "ws" and parts[1] in _PROVIDERS:
        return parts[1]
    return None
