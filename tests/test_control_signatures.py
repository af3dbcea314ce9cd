"""Signature code cross-checked against the official SDKs and protocols.md's vectors.

Twilio: ``twilio.request_validator.RequestValidator``; Plivo: ``plivo.utils.signature_v3``;
Telnyx: Ed25519 signatures made with PyNaCl's ``SigningKey`` (the primitive telnyx-python
2.x verified with), checked by our ``cryptography``-based verifier.
"""

from __future__ import annotations

import base64
import hashlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)
from twilio.request_validator import RequestValidator

from mediastream.control.signatures import (
    load_telnyx_public_key,
    plivo_signature_v3,
    twilio_signature,
    twilio_signature_algorithm,
    verify_plivo_v3,
    verify_telnyx,
    verify_twilio,
)

TWILIO_TOKEN = "test_auth_token_123"
TWILIO_URL = "https://example.com/twilio/voice"
TWILIO_PARAMS = [
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("CallSid", "CA0123456789abcdef0123456789abcdef"),
    ("CallStatus", "ringing"),
    ("Direction", "inbound"),
    ("From", "+15551230001"),
    ("To", "+15559870002"),
]

PLIVO_TOKEN = "plivo_auth_token_abc"
PLIVO_NONCE = "12345678901234567890"
PLIVO_URL = "https://example.com/plivo/answer"
PLIVO_PARAMS = [
    ("CallUUID", "b1c2d3e4-0000-1111-2222-333344445555"),
    ("From", "15551230001"),
    ("To", "15559870002"),
    ("CallStatus", "ringing"),
    ("Direction", "inbound"),
]

TELNYX_SEED = bytes(range(32))
TELNYX_PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
TELNYX_BODY = b'{"data":{"event_type":"call.initiated","payload":{"call_control_id":"v3:abc"}}}'
TELNYX_TS = "1700000000"
TELNYX_SIG = (
    "3IagqxhPT6LiDx2vo652YOvhClZ4Yjba3geJrEVB507XIk3KPiG7LpKx+lDRjUEOgJ30dd1KU7r7UkkQ3VrYCQ=="
)


# ---------------------------------------------------------------------------- Twilio


def test_twilio_vectors_from_protocols_md() -> None:
    assert (
        twilio_signature(TWILIO_URL, TWILIO_PARAMS, TWILIO_TOKEN) == "KTpMg6SqJvqLsj+8HQARivkCc6w="
    )
    assert twilio_signature("wss://example.com/twilio/ws", [], TWILIO_TOKEN) == (
        "uHQGKw7OXWoeE9KSsP1jbUGw16Q="
    )
    body_hash = hashlib.sha256(b'{"a":1}').hexdigest()
    assert body_hash == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    url = f"https://example.com/twilio/voice?bodySHA256={body_hash}"
    assert twilio_signature(url, [], TWILIO_TOKEN) == "tjkiYwbnhBu68WFib6vI+bvipfQ="
    assert (
        verify_twilio(url, [], "tjkiYwbnhBu68WFib6vI+bvipfQ=", [TWILIO_TOKEN], body=b'{"a":1}')
        is None
    )


def test_twilio_accepts_the_url_with_or_without_the_default_port() -> None:
    signature = "KTpMg6SqJvqLsj+8HQARivkCc6w="
    for url in (TWILIO_URL, "https://example.com:443/twilio/voice"):
        assert verify_twilio(url, TWILIO_PARAMS, signature, [TWILIO_TOKEN]) is None


@pytest.mark.parametrize(
    ("url", "params", "signature", "reason"),
    [
        (TWILIO_URL, TWILIO_PARAMS, None, "missing"),
        (TWILIO_URL, TWILIO_PARAMS, "", "missing"),
        (
            TWILIO_URL,
            [*TWILIO_PARAMS[:-1], ("To", "+15550000000")],
            "KTpMg6SqJvqLsj+8HQARivkCc6w=",
            "does not match",
        ),
        (
            "https://evil.example/twilio/voice",
            TWILIO_PARAMS,
            "KTpMg6SqJvqLsj+8HQARivkCc6w=",
            "does not match",
        ),
        (TWILIO_URL, TWILIO_PARAMS, "KTpMg6SqJvqLsj+8HQARivkCc6x=", "does not match"),
    ],
    ids=["missing", "empty", "tampered-param", "other-url", "tampered-signature"],
)
def test_twilio_refuses(
    url: str, params: list[tuple[str, str]], signature: str | None, reason: str
) -> None:
    result = verify_twilio(url, params, signature, [TWILIO_TOKEN])
    assert result is not None and reason in result


def test_twilio_body_hash_must_match_the_body() -> None:
    body_hash = hashlib.sha256(b'{"a":1}').hexdigest()
    url = f"https://example.com/twilio/voice?bodySHA256={body_hash}"
    result = verify_twilio(url, [], "tjkiYwbnhBu68WFib6vI+bvipfQ=", [TWILIO_TOKEN], body=b'{"a":2}')
    assert result is not None and "bodySHA256" in result


def test_twilio_sha256_shared_key_variant_matches_the_sdk() -> None:
    secret = "shared-key-secret"
    header = "key=webhooks_sharedkey_abc,algorithm=HMAC_SHA256"
    algorithm, key = twilio_signature_algorithm(header)
    assert (algorithm, key) == ("HMAC_SHA256", "webhooks_sharedkey_abc")
    sdk = RequestValidator(secret).compute_signature(TWILIO_URL, dict(TWILIO_PARAMS), "HMAC_SHA256")
    assert twilio_signature(TWILIO_URL, TWILIO_PARAMS, secret, algorithm) == sdk
    assert (
        verify_twilio(TWILIO_URL, TWILIO_PARAMS, sdk, ["old", secret], algorithm=algorithm) is None
    )
    # The same signature is not valid as SHA-1.
    assert verify_twilio(TWILIO_URL, TWILIO_PARAMS, sdk, [secret]) is not None
    assert twilio_signature_algorithm(None) == ("HMAC_SHA1", None)


_text = st.text(alphabet=string.ascii_letters + string.digits + ' +-_.:/é&=<"', max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    path=st.text(alphabet=string.ascii_letters + string.digits + "/-_", max_size=20),
    params=st.dictionaries(
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=8), _text, max_size=6
    ),
    port=st.sampled_from(["", ":443", ":8443"]),
)
def test_twilio_agrees_with_the_sdk(path: str, params: dict[str, str], port: str) -> None:
    url = f"https://example.com{port}/{path}"
    validator = RequestValidator(TWILIO_TOKEN)
    ours = twilio_signature(url, list(params.items()), TWILIO_TOKEN)
    assert ours == validator.compute_signature(url, params)
    assert validator.validate(url, params, ours)
    assert verify_twilio(url, list(params.items()), ours, [TWILIO_TOKEN]) is None


def test_twilio_repeated_parameters_sort_and_deduplicate_like_the_sdk() -> None:
    class MultiDict(dict[str, str]):
        def getall(self, name: str) -> list[str]:
            return {"b": ["2", "1", "2"], "a": ["x"]}[name]

    sdk = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, MultiDict(b="", a=""))
    ours = twilio_signature(
        TWILIO_URL, [("b", "2"), ("a", "x"), ("b", "1"), ("b", "2")], TWILIO_TOKEN
    )
    assert ours == sdk


# ---------------------------------------------------------------------------- Telnyx


def test_telnyx_vector_from_protocols_md() -> None:
    signing = SigningKey(TELNYX_SEED)
    assert base64.b64encode(bytes(signing.verify_key)).decode() == TELNYX_PUBLIC
    signed = signing.sign(TELNYX_TS.encode() + b"|" + TELNYX_BODY).signature
    assert base64.b64encode(signed).decode() == TELNYX_SIG
    key = load_telnyx_public_key(TELNYX_PUBLIC)
    assert verify_telnyx(TELNYX_BODY, TELNYX_SIG, TELNYX_TS, key, now=1700000000.0) is None


@pytest.mark.parametrize(
    ("body", "signature", "timestamp", "now", "reason"),
    [
        (TELNYX_BODY + b" ", TELNYX_SIG, TELNYX_TS, 1700000000.0, "does not verify"),
        (TELNYX_BODY, TELNYX_SIG, "1700000001", 1700000001.0, "does not verify"),
        (TELNYX_BODY, TELNYX_SIG, TELNYX_TS, 1700000301.0, "off"),
        (TELNYX_BODY, TELNYX_SIG, TELNYX_TS, 1699999699.0, "off"),
        (TELNYX_BODY, None, TELNYX_TS, 1700000000.0, "missing telnyx-signature"),
        (TELNYX_BODY, TELNYX_SIG, None, 1700000000.0, "missing telnyx-timestamp"),
        (TELNYX_BODY, TELNYX_SIG, "soon", 1700000000.0, "not an integer"),
        (TELNYX_BODY, "not base64!", TELNYX_TS, 1700000000.0, "not base64"),
    ],
    ids=[
        "tampered-body",
        "tampered-timestamp",
        "replayed-stale",
        "future",
        "no-signature",
        "no-timestamp",
        "bad-timestamp",
        "bad-base64",
    ],
)
def test_telnyx_refuses(
    body: bytes, signature: str | None, timestamp: str | None, now: float, reason: str
) -> None:
    key = load_telnyx_public_key(TELNYX_PUBLIC)
    result = verify_telnyx(body, signature, timestamp, key, now=now, tolerance=300)
    assert result is not None and reason in result


def test_telnyx_window_edge_is_inclusive() -> None:
    key = load_telnyx_public_key(TELNYX_PUBLIC)
    assert verify_telnyx(TELNYX_BODY, TELNYX_SIG, TELNYX_TS, key, now=1700000300.0) is None


def test_telnyx_signature_from_another_key_fails() -> None:
    other = SigningKey(bytes(32))
    signed = base64.b64encode(
        other.sign(TELNYX_TS.encode() + b"|" + TELNYX_BODY).signature
    ).decode()
    key = load_telnyx_public_key(TELNYX_PUBLIC)
    assert verify_telnyx(TELNYX_BODY, signed, TELNYX_TS, key, now=1700000000.0) is not None


def test_telnyx_public_key_forms() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = load_telnyx_public_key(TELNYX_PUBLIC)
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    for text in (base64.b64encode(der).decode(), pem):
        assert (
            verify_telnyx(
                TELNYX_BODY, TELNYX_SIG, TELNYX_TS, load_telnyx_public_key(text), now=1700000000.0
            )
            is None
        )
    for bad in ("", "abc", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValueError, match="TELNYX_PUBLIC_KEY"):
            load_telnyx_public_key(bad)


# ----------------------------------------------------------------------------- Plivo


def test_plivo_vectors_from_protocols_md() -> None:
    assert plivo_signature_v3("POST", PLIVO_URL, PLIVO_PARAMS, PLIVO_NONCE, PLIVO_TOKEN) == (
        "DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="
    )
    assert plivo_signature_v3("POST", PLIVO_URL, [], PLIVO_NONCE, PLIVO_TOKEN) == (
        "GLkt6SuSQchEjbT/FoXnIzoU9u/XL80ySkFVzX1D1kQ="
    )
    assert (
        plivo_signature_v3("GET", PLIVO_URL + "?b=2&a=1", PLIVO_PARAMS, PLIVO_NONCE, PLIVO_TOKEN)
        == "LB8+9vOPyOxl5AUhhH1UcPHopDlp4IM2Os9oSYPN9Co="
    )


def test_plivo_verify_accepts_any_of_several_and_the_ma_header() -> None:
    good = "DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="
    for headers in ([f"AAAA,{good}", None], [None, good], ["x", f" {good} "]):
        assert (
            verify_plivo_v3(
                "POST",
                PLIVO_URL,
                PLIVO_PARAMS,
                nonce=PLIVO_NONCE,
                signatures=headers,
                auth_token=PLIVO_TOKEN,
            )
            is None
        )
    assert validate_v3_signature(
        "POST", PLIVO_URL, PLIVO_NONCE, PLIVO_TOKEN, f"AAAA,{good}", dict(PLIVO_PARAMS)
    )


@pytest.mark.parametrize(
    ("params", "nonce", "signatures", "reason"),
    [
        (
            [*PLIVO_PARAMS[:-1], ("Direction", "outbound")],
            PLIVO_NONCE,
            ["DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="],
            "does not match",
        ),
        (PLIVO_PARAMS, "1", ["DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="], "does not match"),
        (
            PLIVO_PARAMS,
            None,
            ["DUXSnEjRRs24Ia8vBFePxVnxg9RqJgkv2dl1s+l5PyA="],
            "missing X-Plivo-Signature-V3-Nonce",
        ),
        (PLIVO_PARAMS, PLIVO_NONCE, [None, None], "missing X-Plivo-Signature-V3"),
    ],
    ids=["tampered-param", "other-nonce", "no-nonce", "no-signature"],
)
def test_plivo_refuses(
    params: list[tuple[str, str]], nonce: str | None, signatures: list[str | None], reason: str
) -> None:
    result = verify_plivo_v3(
        "POST", PLIVO_URL, params, nonce=nonce, signatures=signatures, auth_token=PLIVO_TOKEN
    )
    assert result is not None and reason in result


_query_value = st.text(alphabet=string.ascii_letters + string.digits, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    query=st.dictionaries(
        st.text(alphabet="abcxyz", min_size=1, max_size=3), _query_value, max_size=3
    ),
    params=st.dictionaries(st.text(alphabet="ABCXYZ", min_size=1, max_size=4), _text, max_size=5),
)
def test_plivo_agrees_with_the_sdk(
    method: str, query: dict[str, str], params: dict[str, str]
) -> None:
    from urllib.parse import urlencode

    url = PLIVO_URL + ("?" + urlencode(query) if query else "")
    if method == "GET":
        base = construct_get_url(url, dict(params)).decode()
    else:
        base = construct_post_url(url, dict(params)).decode()
    sdk = get_signature_v3(PLIVO_TOKEN.encode(), base, PLIVO_NONCE.encode()).decode()
    ours = plivo_signature_v3(method, url, list(params.items()), PLIVO_NONCE, PLIVO_TOKEN)
    assert ours == sdk
