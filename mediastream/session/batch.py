"""Every resampler step of every session, converted one at a time or many together.

A session never runs its resampler itself: each step -- a provider payload to the bot's
rate, bot audio to the wire's, silence for a lost frame -- is a :class:`Conversion`
handed to the :class:`ResampleBatcher` it was built with, and the session goes on from
the result (see :mod:`mediastream.session.session`). That is one code path per
direction, whether or not anything is batched:

* ``ResampleBatcher()`` converts each step as it is submitted: a batch of one, the
  result delivered before :meth:`~ResampleBatcher.submit` returns.
* ``ResampleBatcher(defer=loop.call_soon)`` collects the steps submitted during one loop
  turn and converts them at its end: the steps of one group -- same conversion, rate
  pair and chunk size, streams in their steady state -- in one product of
  :mod:`audiocodecs.resample`'s batch functions, and any other step on its own. At 20 ms
  per frame a stream's step is a small product wrapped in half a dozen numpy calls,
  which in a busy server run with cold caches: batching pays those calls once per
  group. The results are bit-identical to the per-stream calls; a step waits at most
  for the rest of its loop turn.
* ``ResampleBatcher(defer=loop.call_soon, batch_from=3.0)`` (what the server builds, one
  per event loop) batches only while it pays. Waiting for the end of the turn costs
  something per step (the callback, the groups, the hand-back), and a product of one
  or two frames saves less than that: at 10-20 calls a turn holds 1-2 frames per group,
  at 50 calls about 3, at 100 about 6. So the batcher measures the frames per product
  of the turns it batches (a moving average); while that falls below ``batch_from`` it
  converts steps at once, and every ``probe_every`` steps it batches one turn again to
  see whether the load has grown. Measured with ``make bench ARGS=server``: converting
  at once is the cheaper of the two up to ~40 calls, batching above.

Order: a stream has at most one step out (its session queues the rest), and results are
delivered in the order they were produced, from one queue, so a flush started from
inside another one (:meth:`flush` while delivering) keeps that order. Inbound groups run
before outbound ones, so a bot's reply to this turn's audio joins the same flush.
A receiver that raises is logged and harms nobody else; a step whose conversion fails
is delivered as the exception, to that stream only.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

import numpy as np

from audiocodecs.resample import (
    StreamResampler,
    process_alaw_many,
    process_many,
    process_to_alaw_many,
    process_to_ulaw_many,
    process_ulaw_many,
)

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_PROBE_EVERY", "Conversion", "Converted", "ResampleBatcher"]

logger = logging.getLogger("mediastream.session")

#: Steps converted at once between two turns that batch to measure (``batch_from``): at
#: 20 calls (2,000 steps a second) a probe every ~30 ms.
DEFAULT_PROBE_EVERY: Final = 64

#: The moving average's weight for the newest turn's frames per product.
_ALPHA: Final = 0.25

#: Streams per product at most: bounds the scratch memory (the windows of 32 streams
#: 16 -> 8 kHz are 0.77 MB, about a core's L2 cache here) and the time one pass holds
#: the loop (~0.15 ms).
DEFAULT_MAX_BATCH: Final = 32

#: Gets a step's result: bytes (int16 little-endian PCM, or G.711 codes), or the
#: exception its conversion raised.
Converted: TypeAlias = Callable[[bytes | Exception], None]
_Many: TypeAlias = Callable[[Sequence[StreamResampler], bytes], np.ndarray]
_One: TypeAlias = Callable[[StreamResampler, bytes], np.ndarray]
_Group: TypeAlias = tuple[list[StreamResampler], list[bytes], list[Converted]]
_Key: TypeAlias = tuple["Conversion", int, int, int]

_BIG_ENDIAN: Final = sys.byteorder == "big"


class Conversion(enum.IntEnum):
    """What one step does; the input and output are bytes.

    An ``IntEnum``: it is part of every step's group key, and an int hashes in C where a
    plain ``Enum`` member hashes in Python (half the cost of the lookup, per frame).
    """

    #: int16 LE PCM -> int16 LE PCM (L16 streams, silence for lost frames).
    PCM = 1
    #: μ-law codes -> int16 LE PCM, decoded straight into the filter.
    ULAW_IN = 2
    #: A-law codes -> int16 LE PCM.
    ALAW_IN = 3
    #: int16 LE PCM -> μ-law codes, encoded straight from the filter.
    ULAW_OUT = 4
    #: int16 LE PCM -> A-law codes.
    ALAW_OUT = 5

    @property
    def inbound(self) -> bool:
        """Runs before the outbound groups of a flush (its results reach bots first)."""
        return self is not Conversion.ULAW_OUT and self is not Conversion.ALAW_OUT


_ULAW_OUT: Final = Conversion.ULAW_OUT
_ALAW_OUT: Final = Conversion.ALAW_OUT

_FUNCTIONS: Final[dict[Conversion, tuple[_Many, _One]]] = {
    Conversion.PCM: (process_many, StreamResampler.process),
    Conversion.ULAW_IN: (process_ulaw_many, StreamResampler.process_ulaw),
    Conversion.ALAW_IN: (process_alaw_many, StreamResampler.process_alaw),
    Conversion.ULAW_OUT: (process_to_ulaw_many, StreamResampler.process_to_ulaw),
    Conversion.ALAW_OUT: (process_to_alaw_many, StreamResampler.process_to_alaw),
}


class ResampleBatcher:
    """Converts the steps sessions submit: at once, or batched once per loop turn.

    Args:
        defer: schedules a callback for the end of the current loop turn (the server
            passes ``loop.call_soon``). ``None``: every step converts as it is submitted.
        max_batch: streams per product at most.
        batch_from: with ``defer``, batch only while the batched turns average at least
            this many frames per product (see the module docstring); ``None``: always.
        probe_every: with ``batch_from``, steps converted at once between two turns
            that batch to measure.

    :attr:`frames` and :attr:`products` count what was converted (a step converted
    on its own is one product); the server publishes them when ``/metrics`` is read.
    """

    __slots__ = (
        "_at_once",
        "_batch_from",
        "_defer",
        "_in",
        "_max",
        "_mean",
        "_out",
        "_probe_every",
        "_ready",
        "_scheduled",
        "frames",
        "products",
    )

    def __init__(
        self,
        defer: Callable[[Callable[[], None]], object] | None = None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_from: float | None = None,
        probe_every: int = DEFAULT_PROBE_EVERY,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {probe_every}")
        self._defer = defer
        self._max = max_batch
        self._batch_from = batch_from
        self._probe_every = probe_every
        #: Moving average of the batched turns' frames per product (None: no turn yet).
        self._mean: float | None = None
        #: Steps still to convert at once before the next turn that batches.
        self._at_once = 0
        self._in: dict[_Key, _Group] = {}
        self._out: dict[_Key, _Group] = {}
        self._ready: deque[tuple[Converted, bytes | Exception]] = deque()
        self._scheduled = False
        #: Frames converted so far (both directions).
        self.frames = 0
        #: Products run so far: frames / products is the mean batch size.
        self.products = 0

    @property
    def batching(self) -> bool:
        """True when steps wait for the end of the loop turn."""
        return self._defer is not None

    @property
    def batching_now(self) -> bool:
        """True when the next step would wait for the end of the turn (False while a
        ``batch_from`` batcher converts at once)."""
        return self._defer is not None and not self._at_once

    @property
    def pending(self) -> bool:
        """True while a step waits for its conversion or its result's delivery."""
        return bool(self._in or self._out or self._ready)

    def submit(self, rs: StreamResampler, kind: Conversion, data: bytes, done: Converted) -> None:
        """Convert ``data`` with ``rs`` (one step of that stream); ``done`` gets the result.

        A stream must not have two steps out at once. Without ``defer`` the result is
        delivered before this returns.
        """
        if self._defer is None or self._at_once:
            if self._at_once:
                self._at_once -= 1
            self._ready.append((done, _convert_one(rs, kind, data)))
            self.frames += 1
            self.products += 1
            self._deliver()
            return
        groups = self._out if kind is _ULAW_OUT or kind is _ALAW_OUT else self._in
        key = (kind, rs.in_rate, rs.out_rate, len(data))
        group = groups.get(key)
        if group is None:
            groups[key] = ([rs], [data], [done])
        else:
            group[0].append(rs)
            group[1].append(data)
            group[2].append(done)
        if not self._scheduled:
            self._scheduled = True
            self._defer(self._on_turn)

    def _on_turn(self) -> None:
        frames, products = self.frames, self.products
        try:
            self.flush()  # steps submitted while it runs join it: no second callback
        finally:
            self._scheduled = False
            frames, products = self.frames - frames, self.products - products
            if self._batch_from is not None and products:
                # The first measured turn sets the average; later ones move it.
                size = frames / products
                mean = self._mean
                mean = size if mean is None else mean + _ALPHA * (size - mean)
                self._mean = mean
                if mean < self._batch_from:
                    self._at_once = self._probe_every

    def flush(self) -> None:
        """Convert everything submitted so far and deliver each result, in order."""
        ready = self._ready
        while True:
            if ready:
                self._deliver()
            elif self._in:
                groups, self._in = self._in, {}
                self._convert(groups)
            elif self._out:
                groups, self._out = self._out, {}
                self._convert(groups)
            else:
                return

    def _deliver(self) -> None:
        ready = self._ready
        while ready:
            done, result = ready.popleft()
            try:
                done(result)
            except Exception:  # receivers catch their own; never harm the others
                logger.exception("resample batch: delivering a result failed")

    def _convert(self, groups: dict[_Key, _Group]) -> None:
        frames = products = 0
        step = self._max
        ready = self._ready
        for (kind, _, _, n), (streams, datas, dones) in groups.items():
            many = _FUNCTIONS[kind][0]
            samples = n >> 1 if kind is Conversion.PCM or not kind.inbound else n
            for start in range(0, len(streams), step):
                part = streams[start : start + step]
                b = len(part)
                frames += b
                ready_all = b > 1
                for rs in part:  # a loop, not all(<genexpr>): no frame per stream
                    if not rs.prepared(samples):
                        ready_all = False
                        break
                if ready_all:
                    try:
                        blob = _as_bytes(many(part, b"".join(datas[start : start + b])))
                    except Exception:  # cannot happen for steady streams; if it does,
                        # convert one by one so that only a stream that fails loses out
                        logger.exception("resample batch failed; converting one by one")
                    else:
                        size = len(blob) // b
                        ready.extend(
                            (dones[start + i], blob[i * size : (i + 1) * size]) for i in range(b)
                        )
                        products += 1
                        continue
                for i in range(start, start + b):
                    ready.append((dones[i], _convert_one(streams[i], kind, datas[i])))
                    products += 1
        self.frames += frames
        self.products += products


def _convert_one(rs: StreamResampler, kind: Conversion, data: bytes) -> bytes | Exception:
    try:
        return _as_bytes(_FUNCTIONS[kind][1](rs, data))
    except Exception as exc:  # the session ends that call (1011); nobody else is harmed
        logger.exception("resampling a frame failed")
        return exc


def _as_bytes(out: np.ndarray) -> bytes:
    """A conversion's output as bytes: int16 PCM little-endian, or G.711 codes."""
    if _BIG_ENDIAN and out.dtype == np.int16:  # pragma: no cover - little-endian hosts
        out = out.astype("<i2")
    return out.tobytes()
