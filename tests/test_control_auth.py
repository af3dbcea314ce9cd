"""Stream tokens and the authentication policy (upgrade, stream start, start-up warnings)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from nacl.signing import SigningKey
from twilio.request_validator import RequestValidator

from mediastream.config import Config, ProviderCredentials
from mediastream.control import (
    StreamTokens,
    auth_enabled,
    auth_warnings,
    check_media_upgrade,
    check_stream_start,
    stream_tokens,
)
from mediastream.control.tokens import TOKEN_LENGTH
from mediastream.errors import AuthenticationError
from mediastream.protocols.events import CallInfo, MediaFormat

TWILIO_TOKEN = "twilio-auth-token"
TELNYX_PUBLIC = base64.b64encode(bytes(SigningKey(bytes(range(32))).verify_key)).decode()
PLIVO_TOKEN = "plivo-auth-token"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _config(**changes: Any) -> Config:
    credentials = changes.pop(
        "credentials",
        ProviderCredentials(
            twilio_account_sid="AC" + "1" * 32,
            twilio_auth_token=TWILIO_TOKEN,
            telnyx_public_key=TELNYX_PUBLIC,
            plivo_auth_id="MA" + "1" * 18,
            plivo_auth_token=PLIVO_TOKEN,
        ),
    )
    values: dict[str, Any] = {"public_url": "https://voice.example.com", "credentials": credentials}
    values.update(changes)
    return Config(**values)


def _call(provider: Any, call_id: str, **params: str) -> CallInfo:
    fmt = MediaFormat("pcmu", 8000)
    return CallInfo(provider, call_id, "stream-1", fmt, fmt, custom_parameters=params)


# ---------------------------------------------------------------------------- tokens


def test_token_round_trip_and_single_use() -> None:
    tokens = StreamTokens(b"secret", 60, clock=Clock())
    token = tokens.issue("twilio", "CA1")
    assert len(token) == TOKEN_LENGTH and token.isalnum() and token.islower()
    tokens.check_issued(token, "twilio")
    tokens.check_issued(token)  # provider unknown (plain /ws): still ours
    tokens.redeem(token, "twilio", "CA1")
    with pytest.raises(AuthenticationError, match="already used"):
        tokens.redeem(token, "twilio", "CA1")
    with pytest.raises(AuthenticationError, match="already used"):
        tokens.check_issued(token, "twilio")


@pytest.mark.parametrize(
    ("provider", "call_id", "message"),
    [
        ("twilio", "CA2", "another call"),
        ("telnyx", "CA1", "another provider"),
    ],
)
def test_token_is_bound_to_call_and_provider(provider: str, call_id: str, message: str) -> None:
    tokens = StreamTokens(b"secret", 60, clock=Clock())
    token = tokens.issue("twilio", "CA1")
    with pytest.raises(AuthenticationError, match=message):
        tokens.redeem(token, provider, call_id)
    tokens.redeem(token, "twilio", "CA1")  # the failed attempts did not spend it


def test_unbound_token_is_accepted_for_any_call_once() -> None:
    tokens = StreamTokens(b"secret", 60, clock=Clock())
    token = tokens.issue("telnyx")
    tokens.redeem(token, "telnyx", "v3:whatever")
    with pytest.raises(AuthenticationError, match="already used"):
        tokens.redeem(token, "telnyx", "v3:other")


def test_token_expires() -> None:
    clock = Clock()
    tokens = StreamTokens(b"secret", 30, clock=clock)
    token = tokens.issue("plivo", "uuid")
    clock.now += 31
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.check_issued(token, "plivo")
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.redeem(token, "plivo", "uuid")


@pytest.mark.parametrize("position", [0, 1, 5, 20, 40, 80, TOKEN_LENGTH - 1])
def test_tampered_token_is_refused(position: int) -> None:
    tokens = StreamTokens(b"secret", 60, clock=Clock())
    token = tokens.issue("twilio", "CA1")
    flipped = "0" if token[position] != "0" else "1"
    tampered = token[:position] + flipped + token[position + 1 :]
    with pytest.raises(AuthenticationError):
        tokens.redeem(tampered, "twilio", "CA1")


@pytest.mark.parametrize("token", ["", "x" * TOKEN_LENGTH, "1t" + "g" * (TOKEN_LENGTH - 2), "abc"])
def test_malformed_token_is_refused(token: str) -> None:
    tokens = StreamTokens(b"secret", 60, clock=Clock())
    with pytest.raises(AuthenticationError):
        tokens.check_issued(token)


def test_token_from_another_secret_is_refused() -> None:
    token = StreamTokens(b"other", 60, clock=Clock()).issue("twilio", "CA1")
    with pytest.raises(AuthenticationError, match="signature"):
        StreamTokens(b"secret", 60, clock=Clock()).check_issued(token, "twilio")


def test_redeemed_record_is_pruned_and_bounded() -> None:
    clock = Clock()
    tokens = StreamTokens(b"secret", 10, clock=clock, max_redeemed=3)
    for i in range(3):
        tokens.redeem(tokens.issue("twilio", f"CA{i}"), "twilio", f"CA{i}")
    fresh = tokens.issue("twilio", "CAx")
    with pytest.raises(AuthenticationError, match="too many"):
        tokens.redeem(fresh, "twilio", "CAx")
    clock.now += 11  # the first three expired and can be forgotten
    later = tokens.issue("twilio", "CAy")
    tokens.redeem(later, "twilio", "CAy")


def test_signed_params_round_trip_and_refuse_tampering() -> None:
    clock = Clock()
    tokens = StreamTokens(b"secret", 60, clock=clock)
    blob = tokens.sign_params({"tenant": "acme & co", "_agent": "sales"}, ttl=100)
    assert tokens.open_params(blob) == {"tenant": "acme & co", "_agent": "sales"}
    body, _, mac = blob.partition(".")
    with pytest.raises(AuthenticationError):
        tokens.open_params(body[:-2] + "AA." + mac)
    with pytest.raises(AuthenticationError):
        StreamTokens(b"other", 60, clock=clock).open_params(blob)
    clock.now += 101
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.open_params(blob)


def test_every_worker_derives_the_same_secret_from_credentials() -> None:
    a = stream_tokens(_config())
    b = stream_tokens(_config())
    token = a.issue("twilio", "CA1")
    b.check_issued(token, "twilio")
    explicit = stream_tokens(_config(stream_token_secret="s3cret"))
    with pytest.raises(AuthenticationError):
        explicit.check_issued(token, "twilio")


# -------------------------------------------------------------------------- policy


def test_auth_is_on_exactly_when_a_signing_credential_is_configured() -> None:
    assert not auth_enabled(Config())
    assert auth_enabled(_config())
    assert auth_enabled(Config(credentials=ProviderCredentials(plivo_auth_token="x")))
    assert not auth_enabled(_config(require_auth=False))
    assert auth_enabled(Config(require_auth=True))
    # A REST key alone signs nothing: it does not switch verification on.
    assert not auth_enabled(Config(credentials=ProviderCredentials(telnyx_api_key="k")))


def test_warnings_without_credentials_are_loud() -> None:
    warnings = auth_warnings(Config())
    assert any("NOT authenticated" in w for w in warnings)
    assert any("MEDIASTREAM_PUBLIC_URL" in w for w in warnings)
    assert auth_warnings(_config()) == []


def test_warnings_name_the_missing_credential() -> None:
    config = _config(credentials=ProviderCredentials(twilio_auth_token="t"), workers=2)
    warnings = auth_warnings(config)
    assert any("telnyx" in w and "TELNYX_PUBLIC_KEY" in w for w in warnings)
    assert any("plivo" in w and "PLIVO_AUTH_TOKEN" in w for w in warnings)
    assert not any("per-process secret" in w for w in warnings)  # derived from the token
    bad_key = _config(credentials=ProviderCredentials(telnyx_public_key="bm90IGEga2V5"))
    assert any("not base64 of a 32-byte" in w for w in auth_warnings(bad_key))
    forced = Config(require_auth=True, workers=4, public_url="https://x.example")
    assert any("MEDIASTREAM_STREAM_TOKEN_SECRET" in w for w in auth_warnings(forced))


# ------------------------------------------------------------------- media upgrade


def _twilio_headers(url: str, **extra: str) -> dict[str, str]:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    return {"Host": "internal:8765", "X-Twilio-Signature": signature, **extra}


def test_twilio_upgrade_signature_over_the_public_wss_url() -> None:
    config = _config()
    headers = _twilio_headers("wss://voice.example.com/ws/twilio/sales")
    check_media_upgrade(config, path="/ws/twilio/sales", query={}, headers=headers, public_url=None)
    with pytest.raises(AuthenticationError, match="does not match"):
        check_media_upgrade(
            config, path="/ws/twilio/other", query={}, headers=headers, public_url=None
        )
    with pytest.raises(AuthenticationError, match="missing X-Twilio-Signature"):
        check_media_upgrade(
            config, path="/ws/twilio/sales", query={}, headers={"Host": "x"}, public_url=None
        )


def test_twilio_upgrade_behind_a_proxy() -> None:
    signed_for = "wss://public.example/ws/twilio"
    headers = _twilio_headers(
        signed_for, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
    )
    untrusting = _config(public_url=None)
    with pytest.raises(AuthenticationError):  # the forwarded host is not believed
        check_media_upgrade(
            untrusting, path="/ws/twilio", query={}, headers=headers, public_url=None
        )
    trusting = _config(public_url=None, trust_forwarded=True)
    check_media_upgrade(trusting, path="/ws/twilio", query={}, headers=headers, public_url=None)
    # The server may also say what its public URL is.
    check_media_upgrade(
        untrusting,
        path="/ws/twilio",
        query={},
        headers=headers,
        public_url="https://public.example",
    )
    # Through a bare tunnel: the Host header is the public host, the scheme unknown.
    tunnel = {"Host": "public.example", "X-Twilio-Signature": headers["X-Twilio-Signature"]}
    check_media_upgrade(untrusting, path="/ws/twilio", query={}, headers=tunnel, public_url=None)


def test_upgrade_token_checks_for_telnyx_and_plivo() -> None:
    config = _config()
    tokens = stream_tokens(config)
    good = tokens.issue("telnyx", "v3:abc")
    check_media_upgrade(
        config, path="/ws/telnyx", query={"token": good}, headers={}, public_url=None
    )
    check_media_upgrade(
        config, path="/ws/telnyx", query={}, headers={}, public_url=None
    )  # deferred
    with pytest.raises(AuthenticationError, match="another provider"):
        check_media_upgrade(
            config, path="/ws/plivo", query={"token": good}, headers={}, public_url=None
        )
    with pytest.raises(AuthenticationError):
        check_media_upgrade(
            config, path="/ws/telnyx", query={"token": "forged"}, headers={}, public_url=None
        )
    header_token = tokens.issue("telnyx", "v3:def")
    check_media_upgrade(
        config,
        path="/ws",
        query={},
        headers={"x-telnyx-streaming-auth-token": header_token},
        public_url=None,
    )
    # A bearer/header token is checked before the upgrade only when it has our shape.
    forged = "1p" + "0" * (TOKEN_LENGTH - 2)
    with pytest.raises(AuthenticationError):
        check_media_upgrade(
            config,
            path="/ws/plivo",
            query={},
            headers={"Authorization": f"Bearer {forged}"},
            public_url=None,
        )
    check_media_upgrade(
        config,
        path="/ws/telnyx",
        query={},
        headers={"Authorization": "Bearer theirs"},
        public_url=None,
    )


def test_stream_start_tries_every_place_a_token_may_be() -> None:
    config = _config()
    token = stream_tokens(config).issue("telnyx", "v3:h")
    # Someone else's Telnyx stream_auth_token in the header does not hide ours.
    check_stream_start(
        config,
        _call("telnyx", "v3:h", _token=token),
        headers={"x-telnyx-streaming-auth-token": "their-static-token"},
    )
    with pytest.raises(AuthenticationError, match="v3:i: malformed"):
        check_stream_start(
            config, _call("telnyx", "v3:i"), headers={"x-telnyx-streaming-auth-token": "theirs"}
        )


def test_streams_of_a_provider_without_signing_credentials_still_need_our_token() -> None:
    config = _config(credentials=ProviderCredentials(plivo_auth_token=PLIVO_TOKEN))
    # No Twilio token: no signature to check before the upgrade...
    check_media_upgrade(config, path="/ws/twilio", query={}, headers={}, public_url=None)
    # ...but the stream still needs a token we issued (e.g. at dial-out).
    with pytest.raises(AuthenticationError, match="no stream token"):
        check_stream_start(config, _call("twilio", "CA1"))
    token = stream_tokens(config).issue("twilio")
    check_stream_start(config, _call("twilio", "CA1", _token=token))


def test_nothing_is_checked_when_auth_is_off() -> None:
    config = Config()
    check_media_upgrade(config, path="/ws/twilio", query={}, headers={}, public_url=None)
    check_stream_start(config, _call("twilio", "CA1"))


# -------------------------------------------------------------------- stream start


@pytest.mark.parametrize(
    ("provider", "call_id", "where"),
    [("twilio", "CA9", "_token"), ("telnyx", "v3:9", "_token"), ("plivo", "u-9", "token")],
)
def test_stream_start_redeems_the_token(provider: str, call_id: str, where: str) -> None:
    config = _config()
    token = stream_tokens(config).issue(provider, call_id)
    call = _call(provider, call_id, **{where: token})
    check_stream_start(config, call)
    with pytest.raises(AuthenticationError, match=f"{call_id}.*already used"):
        check_stream_start(config, call)


def test_stream_start_without_or_with_a_foreign_token_is_refused() -> None:
    config = _config()
    with pytest.raises(AuthenticationError, match="CA1: no stream token"):
        check_stream_start(config, _call("twilio", "CA1"))
    token = stream_tokens(config).issue("twilio", "CA1")
    with pytest.raises(AuthenticationError, match="another call"):
        check_stream_start(config, _call("twilio", "CA2", _token=token))


def test_stream_start_takes_the_upgrade_query_token() -> None:
    config = _config()
    token = stream_tokens(config).issue("telnyx", "v3:q")
    check_stream_start(config, _call("telnyx", "v3:q"), query={"token": token})
