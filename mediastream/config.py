"""Configuration: one frozen dataclass, and the only place environment variables are read.

Every limit has a sane default. ``Config.from_env()`` reads ``MEDIASTREAM_*`` and the
providers' credential variables; the CLI overlays its flags with ``dataclasses.replace``.
Embedders build a ``Config(...)`` directly and never touch the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["Config", "ProviderCredentials"]


@dataclass(frozen=True, slots=True)
class ProviderCredentials:
    """Credentials for the providers' REST APIs and for checking their signatures."""

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    telnyx_api_key: str | None = None
    telnyx_public_key: str | None = None
    telnyx_connection_id: str | None = None
    telnyx_api_base_url: str = "https://api.telnyx.com"
    plivo_auth_id: str | None = None
    plivo_auth_token: str | None = None
    plivo_api_base_url: str = "https://api.plivo.com"
    #: Twilio SharedKey secret(s), comma-separated during a rotation, for webhooks that
    #: carry ``X-Twilio-Webhooks-Signature-Settings`` (protocols.md §1.7).
    twilio_webhook_signing_secret: str | None = None

    @property
    def any_configured(self) -> bool:
        return bool(
            self.twilio_auth_token
            or self.twilio_webhook_signing_secret
            or self.telnyx_public_key
            or self.plivo_auth_token
        )


@dataclass(frozen=True, slots=True)
class Config:
    """Server settings. Times are in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Public base URL providers reach us at (``https://x.example``); wss URLs derive from it.
    public_url: str | None = None
    #: PCM rate handed to bots (Pipecat STT services want 16 kHz).
    bot_sample_rate: int = 16000
    #: Length of the audio frames handed to bots, ms: 20, 40 or 60. Longer frames mean
    #: fewer frames through a bot's pipeline (a Pipecat bot's cost is per frame) for
    #: 20 or 40 ms more latency; see the README's benchmark table.
    bot_frame_ms: int = 20

    # --- limits
    max_calls: int = 500
    max_message_size: int = 64 * 1024
    max_head_size: int = 16 * 1024
    head_timeout: float = 5.0
    handshake_timeout: float = 5.0
    first_message_timeout: float = 5.0
    idle_media_timeout: float = 10.0
    send_timeout: float = 5.0
    drain_timeout: float = 30.0
    #: Inbound frames queued for a bot that is not reading (10 s of 20 ms frames; with
    #: ``bot_frame_ms`` 40, 20 s); beyond, the oldest audio is dropped (control events
    #: never are).
    bot_queue_frames: int = 500
    #: How long a bot may keep running after its call ended before it is cancelled.
    bot_exit_timeout: float = 2.0
    #: Seconds of bot audio queued ahead of playout beyond which the call ends as a bot
    #: error (1011): ``send_audio`` never blocks, so this bounds a bot that floods audio.
    #: Raise it for a bot that queues a long recording in one go.
    max_bot_audio_s: float = 300.0

    # --- bots (mediastream.agents SPECs)
    #: Default bot: ``echo``, ``module``, ``module:function`` or ``file.py[:function]``.
    bot: str = "bot.parrot"
    #: Named agents, ``NAME=SPEC`` separated by commas.
    agents: str = ""
    #: Agents (names from ``agents``, comma-separated) that only listen: answered with a
    #: both-tracks fork of the call's audio, refusing bot audio (docs/design.md).
    listen_only_agents: str = ""
    #: Where a call answered for a listen-only agent goes on: a phone number or
    #: ``sip:`` URI (``<Dial>``), or an http(s) URL of a document to continue with
    #: (``<Redirect>``). Empty: the call goes on with nothing (it hangs up once the
    #: document ends, so set this for any real use).
    listen_continue: str = ""

    # --- pacing and ledger
    #: How far ahead of real time outbound audio may be sent to the provider.
    playout_lead: float = 0.08
    #: Outbound audio between playout marks/checkpoints.
    mark_interval: float = 0.2
    #: Telnyx reorder window, in 20 ms frames.
    reorder_window: int = 3
    #: Bot silence (with nothing queued) that counts as a pause and flushes the tail.
    idle_flush: float = 0.1
    #: A mark not echoed this long after its play time counts as played (clock fallback).
    mark_grace: float = 1.0
    #: Resample the common-case frames of all calls together, once per event-loop turn
    #: (identical audio, less CPU at many calls; see mediastream.server.batch).
    batch_resampling: bool = True
    #: Parse a live call's whole, masked, unfragmented text frames ourselves (RFC 6455
    #: §5.2) instead of handing every frame to websockets' parser; same answers, less
    #: CPU (see docs/server.md). Off only to compare the two or to rule the fast path out.
    fast_frames: bool = True

    # --- security
    #: Bearer token for /dialout (off without it) and for GET /calls and the call
    #: commands (without it: open on loopback with no credentials, else off).
    api_token: str | None = None
    #: Secret for per-call stream tokens; random per process when unset.
    stream_token_secret: str | None = None
    stream_token_ttl: float = 300.0
    #: Trust X-Forwarded-Proto/Host (only behind a proxy you control).
    trust_forwarded: bool = False
    #: Serve TLS (https/wss) on the port itself: PEM certificate chain and key files.
    #: Providers require a publicly trusted certificate (protocols.md §5.6).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Authenticate provider requests (webhook signatures, stream tokens). ``None``: on
    #: exactly when some provider's signing credential is configured.
    require_auth: bool | None = None
    #: Telnyx webhook replay window (telnyx-timestamp age), protocols.md §2.7.
    telnyx_webhook_tolerance: float = 300.0

    # --- control plane (mediastream.control)
    #: TeXML ``<Stream>`` codec both ways: PCMU or PCMA (TeXML documents no L16).
    telnyx_texml_codec: str = "PCMU"
    #: Call Control stream codec (dial-out and Call Control answers): PCMU, PCMA or L16.
    telnyx_call_control_codec: str = "L16"
    telnyx_call_control_sample_rate: int = 16000
    #: Telnyx L16 byte order: ``auto`` (decided per call from the audio, counted in
    #: /metrics), or ``big``/``little`` to force it both ways (protocols.md §5.4).
    telnyx_l16_byteorder: str = "auto"
    #: How /dialout places Telnyx calls: ``texml`` (inline TeXML) or ``call_control``.
    telnyx_dialout_api: str = "texml"
    #: Plivo ``<Stream contentType>``, one format for both directions (protocols.md §3.4).
    plivo_content_type: str = "audio/x-l16;rate=16000"
    #: Ask providers to report stream status to /<provider>/stream-status.
    stream_status_callbacks: bool = True
    #: Provider REST calls: per-attempt timeout and retries on 5xx/429/connection errors.
    rest_timeout: float = 10.0
    rest_retries: int = 3
    credentials: ProviderCredentials = field(default_factory=ProviderCredentials)

    # --- recording (mediastream.recording)
    #: Record every call to ``<dir>/<call_id>.wav`` (stereo: caller left, what the
    #: caller heard right) plus a JSON sidecar; off (``None``) by default. Checked at
    #: start-up: a directory that cannot be written is an error (README: privacy).
    record_dir: str | None = None

    # --- processes
    workers: int = 1
    #: prometheus-client multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``); set, the
    #: /metrics endpoint aggregates every process writing there (``--workers``).
    metrics_multiproc_dir: str | None = None

    # --- shared state (mediastream.cluster; README "Scaling")
    #: Redis for state shared by several instances: single-use stream tokens, the
    #: live-call registry, commands to the instance holding a call (extra ``[cluster]``).
    #: Unset: one process (or ``--workers`` on one machine) shares nothing beyond itself.
    redis_url: str | None = None
    #: Redis unreachable when a stream's token is checked: refuse the stream (False, the
    #: default: a replayed token must not get a bot) or accept it on the local check alone.
    redis_fail_open: bool = False
    #: Seconds a live call's registry entry outlives its instance's last heartbeat (a
    #: heartbeat every third of it): how soon a crashed instance's calls disappear.
    call_registry_ttl: float = 15.0
    #: Seconds a call command forwarded to another instance (or worker) may take (504).
    command_timeout: float = 10.0
    #: Prefix of every Redis key and channel (several deployments on one Redis).
    redis_prefix: str = "mediastream"
    #: ``--workers`` without Redis: the directory the workers share (tokens, calls, the
    #: workers' command sockets). Set by the supervisor, not by hand.
    workers_state_dir: str | None = None

    def __post_init__(self) -> None:
        if self.bot_frame_ms not in (20, 40, 60):
            raise ValueError(
                f"bot_frame_ms must be 20, 40 or 60 (ms), got {self.bot_frame_ms}")
        if self.record_dir is not None and not self.record_dir.strip():
            raise ValueError("record_dir must name a directory (None: no recording)")

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def listen_only_names(self) -> frozenset[str]:
        """:attr:`listen_only_agents` as a set of names."""
        return frozenset(n.strip() for n in self.listen_only_agents.split(",") if n.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a config from ``MEDIASTREAM_<FIELD>`` and the provider variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "credentials":
                continue
            raw = env.get("MEDIASTREAM_" + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw, f.type)
        if "metrics_multiproc_dir" not in values and env.get("PROMETHEUS_MULTIPROC_DIR"):
            values["metrics_multiproc_dir"] = env["PROMETHEUS_MULTIPROC_DIR"]
        creds = ProviderCredentials(
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_api_base_url=env.get("TWILIO_API_BASE_URL") or "https://api.twilio.com",
            telnyx_api_key=env.get("TELNYX_API_KEY") or None,
            telnyx_public_key=env.get("TELNYX_PUBLIC_KEY") or None,
            telnyx_connection_id=env.get("TELNYX_CONNECTION_ID") or None,
            telnyx_api_base_url=env.get("TELNYX_API_BASE_URL") or "https://api.telnyx.com",
            plivo_auth_id=env.get("PLIVO_AUTH_ID") or None,
            plivo_auth_token=env.get("PLIVO_AUTH_TOKEN") or None,
            plivo_api_base_url=env.get("PLIVO_API_BASE_URL") or "https://api.plivo.com",
            twilio_webhook_signing_secret=env.get("TWILIO_WEBHOOK_SIGNING_SECRET") or None,
        )
        return cls(credentials=creds, **values)


def _convert(name: str, raw: str, annotation: object) -> Any:
    text = str(annotation)
    try:
        if text.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"MEDIASTREAM_{name.upper()}: cannot parse {raw!r} as {text}") from None
    return raw
