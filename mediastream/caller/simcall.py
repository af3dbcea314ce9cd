"""One simulated phone call, played from the provider's side.

Life of a call: (optionally) POST the incoming-call webhook and read the answer document;
open the WebSocket; send the opening messages; then, on every tick of the shared 20 ms
clock, send the next frame of the caller's audio, send DTMF when due, and acknowledge the
marks/checkpoints whose audio has played; at the end send ``stop`` (where the protocol has
one) and close. What the server sends is parsed, checked against the dialect, and queued
in the playout buffer; the measurements are taken from the sent and heard audio once the
call is over.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import numpy.typing as npt
from websockets.exceptions import InvalidURI

from mediastream.protocols.events import Encoding, MediaFormat, ProviderName

from .analysis import measure
from .answer import AnswerError, StreamTarget, fetch_answer
from .audio import (
    FRAME_MS,
    ProbeConfig,
    SendPlan,
    other_party_frames,
    probe_plan,
    speech_plan,
    write_wav,
)
from .connection import HandshakeFailed, WebSocketClient
from .dialects import (
    CallerDialect,
    ServerClear,
    ServerDtmf,
    ServerMark,
    ServerMedia,
    dialect_for,
    new_identity,
)
from .faults import FaultPlan
from .playout import Playout
from .report import CallReport
from .signing import twilio_signature
from .ticker import Ticker

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CallSettings", "PlanCache", "SimulatedCall", "default_formats"]

log = logging.getLogger(__name__)

#: How many protocol violations a call keeps verbatim (all are counted).
MAX_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Everything the calls of one run share."""

    provider: ProviderName
    #: ws(s):// stream URL, or None when ``webhook`` is set.
    url: str | None
    webhook: str | None = None
    seconds: float = 5.0
    codec: Encoding = "pcmu"
    rate: int = 8000
    params: dict[str, str] = field(default_factory=dict)
    faults: FaultPlan = field(default_factory=FaultPlan)
    #: (digit, seconds into the call) pairs.
    dtmf: tuple[tuple[str, float], ...] = ()
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    wav: tuple[npt.NDArray[np.int16], int] | None = None
    #: Seconds of silence before the WAV starts (let a bot's greeting finish).
    wav_at: float = 0.0
    #: Twilio/Plivo auth token or Telnyx base64 Ed25519 seed, to sign webhooks/upgrades.
    secret: str | None = None
    record_dir: Path | None = None
    from_number: str = "+15551230001"
    to_number: str = "+15559870002"
    connect_timeout: float = 10.0
    halfopen_wait: float = 15.0
    ssl_context: ssl.SSLContext | None = None
    seed: int | None = None
    #: ``"inbound"``, or ``"both"``: a both-tracks fork whose outbound track (the other
    #: party, a steady ``OTHER_PARTY_HZ`` tone) is streamed beside the caller's.
    tracks: str = "inbound"


def default_formats(
    provider: ProviderName, codec: Encoding, rate: int
) -> tuple[MediaFormat, MediaFormat]:
    """(inbound, outbound) formats when no answer document says otherwise."""
    if provider == "twilio":
        if codec != "pcmu" or rate != 8000:
            raise ValueError("Twilio streams μ-law at 8 kHz only (protocols.md §5.3)")
        return MediaFormat("pcmu", 8000), MediaFormat("pcmu", 8000)
    if rate not in (8000, 16000):
        raise ValueError("rate must be 8000 or 16000")
    if codec in ("pcmu", "pcma"):
        if rate != 8000:
            raise ValueError("G.711 is 8 kHz only")
        if provider == "plivo" and codec == "pcma":
            raise ValueError("Plivo streams μ-law or L16, not A-law (protocols.md §3.4)")
        fmt = MediaFormat(codec, 8000)
        return fmt, fmt
    if provider == "telnyx":
        # §5.4: Telnyx L16 is network byte order; replies default to PCMU 8 kHz (§2.4).
        return MediaFormat("l16", rate, byteorder="big"), MediaFormat("pcmu", 8000)
    fmt = MediaFormat("l16", rate, byteorder="little")
    return fmt, fmt


class PlanCache:
    """One :class:`SendPlan` per inbound format, shared by every call of a run."""

    def __init__(self, settings: CallSettings) -> None:
        self._settings = settings
        self._plans: dict[MediaFormat, SendPlan] = {}
        self._others: dict[MediaFormat, list[bytes]] = {}

    def other(self, fmt: MediaFormat) -> list[bytes]:
        """The outbound track's frames of a both-tracks call (``tracks="both"``)."""
        frames = self._others.get(fmt)
        if frames is None:
            frames = self._others[fmt] = other_party_frames(fmt, self._settings.seconds)
        return frames

    def get(self, fmt: MediaFormat) -> SendPlan:
        plan = self._plans.get(fmt)
        if plan is None:
            s = self._settings
            if s.wav is not None:
                plan = speech_plan(fmt, s.seconds, s.wav[0], s.wav[1], start_s=s.wav_at)
            else:
                plan = probe_plan(fmt, s.seconds, s.probe)
            self._plans[fmt] = plan
        return plan


class SimulatedCall:
    """One call: set up, stream on the ticker, measure."""

    def __init__(
        self,
        index: int,
        settings: CallSettings,
        ticker: Ticker,
        plans: PlanCache,
        *,
        http: aiohttp.ClientSession | None = None,
        run_start: float | None = None,
    ) -> None:
        self.index = index
        self.settings = settings
        self.ticker = ticker
        self.plans = plans
        self.http = http
        self.run_start = time.monotonic() if run_start is None else run_start
        self.report = CallReport(index=index, provider=settings.provider)
        self.rng = random.Random(None if settings.seed is None else settings.seed + index)
        self.conn: WebSocketClient | None = None
        self.dialect: CallerDialect | None = None
        self.plan: SendPlan | None = None
        #: The outbound track's frames when the call streams both tracks.
        self.other: list[bytes] | None = None
        self.target: StreamTarget | None = None
        self.j = 0  # next frame to send
        self.t_ref = 0.0
        self.hung_up = False
        self.aborted = False
        self.half_open_at: float | None = None
        self.listen_end = float("inf")
        #: Due time of the last tick played (none yet: nothing to catch up).
        self._last_due = float("inf")
        self._held: bytes | None = None
        self._last_release = 0.0
        self._events: dict[int, list[str]] = {}
        self.playout = Playout(rate=8000, t_ref=0.0)  # replaced once the stream opens
        self.send_times = np.zeros(0)
        self.lags = np.zeros(0)
        self._done: asyncio.Future[None] | None = None
        self._streamed = False
        self._finished = False

    @property
    def frames_received(self) -> int:
        return self.playout.received

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, analyze: bool = True) -> CallReport:
        """Place the call, stream it to the end, and return its report.

        With ``analyze=False`` the measurements wait for :meth:`finish`: a load run
        analyses every call after the last one ended, so numpy work never delays the
        frames of calls still streaming."""
        r = self.report
        r.started_at = time.monotonic() - self.run_start
        try:
            await self._connect()
        except Exception as exc:  # any setup failure is this call's, never the run's
            r.handshake_failed = True
            if isinstance(exc, (AnswerError, HandshakeFailed)):
                r.failure = str(exc)
            else:
                r.failure = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (AnswerError, HandshakeFailed, OSError, TimeoutError,
                                    ValueError, InvalidURI)):
                log.exception("call %d (%s): unexpected setup error", self.index, r.call_id)
            r.end = "failed"
            log.info("call %d (%s): setup failed: %s", self.index, r.call_id, r.failure)
            if self.conn is not None:
                self.conn.abort()
            return r
        assert self.conn is not None
        self._start()
        assert self._done is not None
        s = self.settings
        limit = s.seconds + 30.0 + (s.halfopen_wait if s.faults.halfopen_at is not None else 0)
        try:
            await asyncio.wait_for(asyncio.shield(self._done), limit)
        except TimeoutError:
            r.warnings.append(f"call did not end within {limit:.0f} s; aborted")
            self.conn.abort()
            await self._done
        self._streamed = True
        if analyze:
            self.finish()
        return r

    async def _connect(self) -> None:
        s = self.settings
        identity = new_identity(s.provider, from_number=s.from_number, to_number=s.to_number)
        self.report.call_id = identity.call_id
        if s.webhook:
            if self.http is None:
                raise AnswerError("no HTTP session for the webhook")
            try:
                target = await fetch_answer(
                    self.http, s.webhook, s.provider, identity,
                    secret=s.secret, timeout=s.connect_timeout,
                )
            except aiohttp.ClientSSLError as exc:
                raise AnswerError(_tls_failure(s.webhook, exc)) from exc
        else:
            assert s.url is not None
            target = StreamTarget(s.url)
            if s.provider == "twilio" and s.secret:
                # §1.7: Twilio signs the upgrade over the wss:// URL, no parameters.
                target = StreamTarget(
                    s.url, headers={"X-Twilio-Signature": twilio_signature(s.secret, s.url)}
                )
        self.target = target
        self.report.stream_url = target.url
        self.report.warnings.extend(target.warnings)
        inbound, outbound = default_formats(s.provider, s.codec, s.rate)
        inbound = target.inbound or inbound
        outbound = target.outbound or outbound
        params = {**target.parameters, **s.params}
        both = s.tracks == "both"
        tracks = ("inbound", "outbound") if both else ("inbound",)
        self.dialect = dialect_for(s.provider)(identity, inbound, outbound, params, tracks)
        self.plan = self.plans.get(inbound)
        self.other = self.plans.other(inbound) if both else None
        self._schedule_events()

        from websockets.uri import parse_uri

        wsuri = parse_uri(target.url)
        loop = asyncio.get_running_loop()
        context = None
        if wsuri.secure:
            context = s.ssl_context or ssl.create_default_context()

        def factory() -> WebSocketClient:
            self.conn = WebSocketClient(
                target.url, self, headers=target.headers, call_id=identity.call_id
            )
            return self.conn

        try:
            await asyncio.wait_for(
                loop.create_connection(
                    factory, wsuri.host, wsuri.port, ssl=context,
                    server_hostname=wsuri.host if context else None,
                ),
                s.connect_timeout,
            )
        except ssl.SSLError as exc:
            raise HandshakeFailed(_tls_failure(target.url, exc)) from exc
        assert self.conn is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.conn.opened), s.connect_timeout)
        except TimeoutError:
            raise HandshakeFailed("no handshake response in time") from None

    def _schedule_events(self) -> None:
        s = self.settings

        def frames(seconds: float) -> int:
            return max(0, round(seconds * 1000 / FRAME_MS))

        for digit, at in s.dtmf:
            self._events.setdefault(frames(at), []).append("dtmf:" + digit)
        f = s.faults
        for stall in f.stalls:
            self._events.setdefault(frames(stall.at), []).append(f"stall:{stall.value}")
        if f.close_at is not None:
            self._events.setdefault(frames(f.close_at), []).append("close")
        if f.halfopen_at is not None:
            self._events.setdefault(frames(f.halfopen_at), []).append("halfopen")

    def _start(self) -> None:
        assert self.conn is not None and self.dialect is not None and self.plan is not None
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        now = time.monotonic()
        self.t_ref = now
        self.playout = Playout(rate=self.dialect.outbound.sample_rate, t_ref=now)
        n = len(self.plan.frames)
        self.send_times = np.full(n, np.nan)
        self.lags = np.zeros(n)
        for message in self.dialect.opening(int(time.time() * 1000)):
            self.conn.send_text(message)
        self.ticker.add(self)

    # ------------------------------------------------------------------ the 20 ms tick

    def tick(self, k: int, due: float) -> None:
        """Send this tick's frame and acknowledge the marks that have played."""
        try:
            self._tick(due)
        except Exception:
            log.exception("call %d (%s): tick failed", self.index, self.report.call_id)
            self.report.warnings.append("internal error in the caller; call aborted")
            self.ticker.remove(self)
            if self.conn is not None:
                self.conn.abort()

    def _tick(self, due: float) -> None:
        conn, dialect, plan = self.conn, self.dialect, self.plan
        assert conn is not None and dialect is not None and plan is not None
        now = time.monotonic()
        j = self.j
        if j < len(plan.frames):
            events = self._events.pop(j, ())
            for event in events:
                if not event.startswith("dtmf:") and not self._apply(event, now):
                    return
            message = dialect.media(plan.frames[j], j * FRAME_MS)
            self.send_times[j] = now
            self.lags[j] = now - due
            self._send_media(message, now)
            other = self.other
            if other is not None and j < len(other):
                # The other party's frame of the same 20 ms, right behind the caller's.
                self._send_media(dialect.media(other[j], j * FRAME_MS, "outbound"), now)
            self.j = j + 1
            for event in events:
                if event.startswith("dtmf:"):
                    # After this frame, in order with the audio around the key press.
                    digit = event[5:]
                    conn.send_text(dialect.dtmf(digit))
                    self.report.dtmf_sent += digit
        for name in self.playout.advance(due):
            self._acknowledge(name)
        self._last_due = due
        if self.j >= len(plan.frames) and now >= self._hang_up_after(plan):
            self._hang_up()

    def _catch_up_playout(self, now: float, *, acknowledge: bool) -> None:
        """Play the ticks a punctual clock would have played by ``now``.

        The playout runs on the ticker's due times so the load generator's lateness never
        shifts it; when the call stops ticking while the ticker is behind, the ticks due
        by then have not run, and audio that had arrived in time would be missing from
        what the caller heard (an overloaded generator's artifact, not the server's loss).
        """
        due = self._last_due + FRAME_MS / 1000
        while due <= now:
            for name in self.playout.advance(due):
                if acknowledge:
                    self._acknowledge(name)
            self._last_due = due
            due += FRAME_MS / 1000

    def _hang_up_after(self, plan: SendPlan) -> float:
        # Listen for the plan's tail after the last probe really went out: a generator
        # that fell behind and caught up in a burst must not hang up on its own echo.
        last = plan.last_signal_frame
        if last is None or last >= self.j:
            return 0.0
        return float(self.send_times[last]) + FRAME_MS / 1000 + plan.listen_s - 0.001

    def _apply(self, event: str, now: float) -> bool:
        """Apply a scheduled event before frame j; False if the call stops ticking."""
        conn = self.conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        if event.startswith("stall:"):
            conn.stall()
            loop.call_later(float(event[6:]) / 1000, conn.unstall)
        elif event == "close":
            self.aborted = True
            self.listen_end = now
            self.ticker.remove(self)
            conn.abort()
            return False
        elif event == "halfopen":
            self.half_open_at = now
            self.listen_end = now
            self.ticker.remove(self)
            conn.go_half_open()
            loop.call_later(self.settings.halfopen_wait, conn.abort)
            return False
        return True

    def _send_media(self, message: bytes, now: float) -> None:
        f = self.settings.faults
        out = [message]
        if f.reorder:
            if self._held is None and self.rng.random() < f.reorder:
                self._held = message
                return
            if self._held is not None:
                out.append(self._held)
                self._held = None
        self._send(out, now)

    def _send(self, messages: list[bytes], now: float) -> None:
        conn = self.conn
        assert conn is not None
        jitter = self.settings.faults.jitter_ms
        if not jitter:
            for m in messages:
                conn.send_text(m)
            return
        release = max(now + self.rng.uniform(0, jitter / 1000), self._last_release + 1e-6)
        self._last_release = release
        asyncio.get_running_loop().call_at(release, self._send_later, messages)

    def _send_later(self, messages: list[bytes]) -> None:
        if self.conn is not None:
            for m in messages:
                self.conn.send_text(m)

    def _acknowledge(self, name: str) -> None:
        assert self.conn is not None and self.dialect is not None
        self.conn.send_text(self.dialect.mark_played(name))
        self.report.marks_acknowledged += 1

    def _hang_up(self) -> None:
        assert self.conn is not None and self.dialect is not None
        self.ticker.remove(self)
        if self.hung_up:
            return
        self.hung_up = True
        now = time.monotonic()
        self._catch_up_playout(now, acknowledge=True)
        # The last tick's frame covers 20 ms after it: the caller listened that long.
        self.listen_end = now + FRAME_MS / 1000
        closing: list[bytes] = []
        if self._held is not None:
            closing.append(self._held)
            self._held = None
        stop = self.dialect.stop()
        if stop is not None:
            closing.append(stop)
        if self.settings.faults.jitter_ms:
            # Behind any frames still held back by the jitter fault.
            release = max(now, self._last_release) + 1e-6
            self._last_release = release
            asyncio.get_running_loop().call_at(release, self._close_after, closing)
        else:
            self._close_after(closing)

    def _close_after(self, messages: list[bytes]) -> None:
        conn = self.conn
        assert conn is not None
        for m in messages:
            conn.send_text(m)
        conn.close(1000, "")

    # ------------------------------------------------------------------ server messages

    def on_text(self, text: str, now: float) -> None:
        """A text message from the server."""
        if self.hung_up or self.half_open_at is not None or self.aborted:
            return
        dialect = self.dialect
        assert dialect is not None and self.conn is not None
        parsed = dialect.parse(text)
        for issue in parsed.violations:
            self._violation(issue)
        message = parsed.message
        r = self.report
        if isinstance(message, ServerMedia):
            if self.target is not None and not self.target.bidirectional:
                self._violation("audio sent on a unidirectional stream")
                return
            self.playout.enqueue(message.payload, message.format, now)
        elif isinstance(message, ServerMark):
            r.marks_received += 1
            if self.playout.add_mark(message.name, now):
                self._acknowledge(message.name)
        elif isinstance(message, ServerClear):
            r.clears += 1
            pending = self.playout.clear(now)
            if dialect.clear_echoes_marks:
                # Twilio/Telnyx return every pending mark at once (§5.2).
                for name in pending:
                    self._acknowledge(name)
            ack = dialect.cleared()
            if ack is not None:
                self.conn.send_text(ack)
        elif isinstance(message, ServerDtmf):
            r.dtmf_received += message.digits

    def on_binary(self, data: bytes, now: float) -> None:
        """A binary message: every provider wants text frames (§0, Twilio 31950)."""
        if not self.hung_up:
            self._violation(f"31950 binary frame of {len(data)} bytes (text frames only)")

    def on_close_frame(self, code: int | None, reason: str, now: float) -> None:
        """The server's close frame (or its reply to ours)."""
        r = self.report
        r.close_code = code
        r.close_reason = reason
        if not self.hung_up:
            self.listen_end = min(self.listen_end, now)
            if self.ticker.remove(self):
                # No acknowledgements: nothing may follow the server's close frame.
                self._catch_up_playout(self.listen_end, acknowledge=False)

    def on_connection_lost(self, now: float) -> None:
        """TCP is gone: the call is over."""
        self.ticker.remove(self)
        r = self.report
        if self.aborted:
            r.end = "aborted"
        elif self.half_open_at is not None:
            r.end = "half_open"
            detected = now - self.half_open_at
            if detected < self.settings.halfopen_wait - 0.05:
                r.halfopen_detected_ms = detected * 1000
        elif self.hung_up:
            r.end = "completed"
        else:
            r.end = "server_closed"
            self.listen_end = min(self.listen_end, now)
        r.duration_s = now - self.t_ref
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _violation(self, issue: str) -> None:
        r = self.report
        r.protocol_errors += 1
        if len(r.protocol_error_samples) < MAX_SAMPLES:
            r.protocol_error_samples.append(issue)
        if r.protocol_errors == 1:
            log.warning("call %d (%s): protocol violation: %s", self.index, r.call_id, issue)

    # ------------------------------------------------------------------ results

    def finish(self) -> CallReport:
        """Take the measurements of a call that has ended (once)."""
        plan, r = self.plan, self.report
        if plan is None or not self._streamed or self._finished:
            return r
        self._finished = True
        playout = self.playout
        heard = playout.heard()
        frames_sent = self.j
        m = measure(
            plan, self.send_times, frames_sent, heard, playout.rate, self.t_ref,
            self.listen_end, playout.gaps, playout.clears, playout.arrival_times,
        )
        r.frames_sent = frames_sent
        r.frames_received = playout.received
        r.latency_kind = "probe_round_trip" if plan.kind == "probe" else "response_after_utterance"
        r.opened_at = self.t_ref - self.run_start
        r.latencies_ms = m.latencies_ms
        r.queue_ms = m.queue_ms
        r.latency_times_s = [t + self.t_ref - self.run_start for t in m.latency_times_s]
        r.probes = m.probes_counted
        r.probes_returned = m.probes_matched
        r.lost_ms = m.lost_ms
        r.jitter_ms = m.jitter_ms
        r.interarrival_jitter_ms = playout.jitter * 1000 if playout.received > 1 else None
        r.underruns = m.underruns
        r.underrun_ms = m.underrun_ms
        r.clear_to_silence_ms = m.clear_to_silence_ms
        r.send_lag_ms = self.lags[:frames_sent] * 1000
        if self.settings.record_dir is not None:
            path = self.settings.record_dir / f"call-{self.index:04d}-heard.wav"
            write_wav(path, heard, playout.rate)
            r.recording = str(path)
        # The audio is no longer needed; a long run keeps only the figures.
        self.playout = Playout(rate=playout.rate, t_ref=playout.t_ref)
        return r


def _tls_failure(url: str, exc: BaseException) -> str:
    """A TLS failure, naming the URL dialled (several may be in play: webhook, stream)."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    return (f"TLS to {url} failed: {reason}"
            " (--insecure skips certificate checks, for test servers)")
