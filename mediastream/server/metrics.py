"""Prometheus metrics of one server process, served at ``/metrics``.

Each :class:`ServerMetrics` owns a private :class:`~prometheus_client.CollectorRegistry`
(not the global one), so several servers in one process -- tests, embedders -- never
collide. With ``--workers N`` every worker process writes its values to
prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set up by the
supervisor in :mod:`mediastream.server.workers`) and ``/metrics`` on any worker
aggregates all of them: counters and histograms are summed, the two gauges use
``livesum`` (the sum over live processes). A scrape through the shared port therefore
sees the whole server, whichever worker answers.

Per-call counters live in the call's :class:`~mediastream.session.stats.SessionStats`;
:class:`StatsSync` moves the increments into the counters (on a periodic tick and once
at the end of the call), so the per-frame path touches no metric except the
processing-time histogram, and that for one message in 8 (timing and observing each
one cost as much as a tenth of the message's own work). Likewise the resampling
batcher counts in plain ints and :meth:`ServerMetrics.sync_batches` publishes them on
the periodic tick and when ``/metrics`` is read (scrape hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from mediastream.errors import Outcome

__all__ = ["CALL_OUTCOMES", "ServerMetrics", "StatsSync"]

#: Values of the ``outcome`` label of ``mediastream_calls_total`` (see
#: :class:`mediastream.errors.Outcome` for what each means and its close code).
CALL_OUTCOMES = tuple(outcome.value for outcome in Outcome)

# Per-frame work is tens of microseconds; the buckets resolve 5 µs .. 25 ms.
_FRAME_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2)
_CLEAR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

# SessionStats field -> counter attribute of ServerMetrics.
_SYNCED = (
    ("frames_in", "frames_in"),
    ("frames_out", "frames_out"),
    ("frames_filled", "frames_filled"),
    ("frames_late_dropped", "frames_late_dropped"),
    ("frames_reordered", "frames_reordered"),
    ("frames_cleared", "frames_cleared"),
)


class ServerMetrics:
    """The server's metrics; ``multiprocess_dir`` aggregates the workers' files."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        #: Called before each render: they move counts kept elsewhere into the metrics.
        self._scrape_hooks: list[Callable[[], None]] = []
        self._batches_seen = (0, 0)
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge(
            "mediastream_active_calls",
            "Calls in progress (start received, not yet ended).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.calls = Counter(
            "mediastream_calls",
            "Calls ended, by provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self.l16_byteorder = Counter(
            "mediastream_telnyx_l16_byteorder",
            "Telnyx L16 calls by the byte order used and how it was chosen "
            "(detected from the audio, forced by configuration, or default: undecided).",
            ["order", "how"],
            registry=r,
        )
        self.rejected = Counter(
            "mediastream_upgrades_rejected",
            "Media WebSocket upgrades refused before the upgrade, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.frames_in = Counter(
            "mediastream_frames_in", "Media messages received from providers.", ["provider"],
            registry=r,
        )
        self.frames_out = Counter(
            "mediastream_frames_out", "Media messages sent to providers.", ["provider"],
            registry=r,
        )
        self.frames_filled = Counter(
            "mediastream_frames_filled",
            "Missing inbound frames replaced by silence.",
            ["provider"],
            registry=r,
        )
        self.frames_late_dropped = Counter(
            "mediastream_frames_late_dropped",
            "Inbound frames dropped as duplicates or too late to reorder.",
            ["provider"],
            registry=r,
        )
        self.frames_reordered = Counter(
            "mediastream_frames_reordered",
            "Inbound frames put back in sequence order.",
            ["provider"],
            registry=r,
        )
        self.frames_cleared = Counter(
            "mediastream_frames_cleared",
            "Outbound frames dropped unsent by a clear (barge-in).",
            ["provider"],
            registry=r,
        )
        self.bot_events_dropped = Counter(
            "mediastream_bot_events_dropped",
            "Inbound audio frames dropped because a bot stopped reading its events.",
            registry=r,
        )
        self.batch_frames = Counter(
            "mediastream_resample_batch_frames",
            "Frames resampled by the per-loop-turn batch (both directions).",
            registry=r,
        )
        self.batch_products = Counter(
            "mediastream_resample_batch_products",
            "Products the resampling batch ran (frames / products = mean batch size).",
            registry=r,
        )
        self.send_queue = Gauge(
            "mediastream_send_queue_frames",
            "Outbound wire frames queued for pacing, summed over live calls.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.frame_seconds = Histogram(
            "mediastream_frame_processing_seconds",
            "Server time to process one inbound message (parse, decode, resample, dispatch);"
            " sampled: one message in 8 per call.",
            registry=r,
            buckets=_FRAME_BUCKETS,
        )
        self.clear_to_silence = Histogram(
            "mediastream_clear_to_silence_seconds",
            "Time from a clear until the provider confirmed the caller hears silence.",
            registry=r,
            buckets=_CLEAR_BUCKETS,
        )

    def add_scrape_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` before every render (it must not raise)."""
        self._scrape_hooks.append(hook)

    def sync_batches(self, frames: int, products: int) -> None:
        """Publish the resampling batcher's running totals (it counts in plain ints)."""
        seen_frames, seen_products = self._batches_seen
        if frames != seen_frames:
            self.batch_frames.inc(frames - seen_frames)
        if products != seen_products:
            self.batch_products.inc(products - seen_products)
        self._batches_seen = (frames, products)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        for hook in self._scrape_hooks:
            hook()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class StatsSync:
    """Moves one call's :class:`SessionStats` increments into the server's counters."""

    __slots__ = ("_children", "_last", "_last_clear", "_last_queue", "_metrics", "_protocol")

    def __init__(self, metrics: ServerMetrics, provider: str, protocol: Any = None) -> None:
        self._metrics = metrics
        #: The call's protocol, asked at the end which L16 byte order it used (Telnyx).
        self._protocol = protocol
        self._children: list[tuple[str, Any]] = [
            (field, getattr(metrics, attr).labels(provider)) for field, attr in _SYNCED
        ]
        self._last: dict[str, int] = dict.fromkeys((f for f, _ in _SYNCED), 0)
        self._last_clear: tuple[int, float] | None = None
        self._last_queue = 0

    def sync(self, stats: Any, queued_frames: int) -> None:
        """Add what changed since the previous call; ``queued_frames`` feeds the gauge."""
        last = self._last
        for field, child in self._children:
            value = getattr(stats, field)
            delta = value - last[field]
            if delta:
                child.inc(delta)
                last[field] = value
        if queued_frames != self._last_queue:
            self._metrics.send_queue.inc(queued_frames - self._last_queue)
            self._last_queue = queued_frames

    def sync_clear(self, stats: Any) -> None:
        """Observe a new clear-to-silence measurement (called when an ack arrives)."""
        clears = stats.clears
        value = stats.clear_to_silence_s
        if value is not None and (clears, value) != self._last_clear:
            self._metrics.clear_to_silence.observe(value)
            self._last_clear = (clears, value)

    def close(self, stats: Any) -> None:
        """Final sync; the call's queued frames leave the gauge; a Telnyx L16 call's byte
        order (and how it was chosen) is counted."""
        self.sync(stats, 0)
        decision = getattr(self._protocol, "l16_order_in_use", None)
        if decision is not None:
            self._metrics.l16_byteorder.labels(*decision).inc()
