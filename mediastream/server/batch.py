"""Resampling for all calls of one event loop, batched once per loop turn.

At 20 ms per frame a stream's resampling is a small product (20 x 75 by 75 x 16 for
8 -> 16 kHz) wrapped in half a dozen numpy calls, and in a busy server those calls run
with cold caches between socket reads: 6-7 µs a frame each way at 200 calls, twice a
warm loop's figure. :class:`ResampleBatcher` collects the frames that arrive in one
loop turn (the sessions hand them out, see
:meth:`~mediastream.session.CallSession.attach_batcher`) and converts each group of
streams in one pass of :mod:`audiocodecs.resample`'s batch functions at the end of the
turn. The results are bit-identical to converting each frame on its own; a frame waits
at most for the rest of its loop turn (the reads already queued), and a session that
needs its pending frame sooner settles the batch on the spot.

Order of work in a flush: inbound groups first (their results go to the bots, whose
replies may add outbound items), then outbound groups, until nothing is left; results
wait in one queue, so a flush started from inside another one (a session settling)
finishes everybody's pending results in order.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

import numpy as np

from audiocodecs.resample import (
    StreamResampler,
    process_alaw_many,
    process_to_alaw_many,
    process_to_ulaw_many,
    process_ulaw_many,
)
from mediastream.session import BatchStep

__all__ = ["ResampleBatcher"]

logger = logging.getLogger("mediastream.server")

Done: TypeAlias = Callable[[bytes], None]
_Many: TypeAlias = Callable[[Sequence[StreamResampler], bytes], np.ndarray]
_One: TypeAlias = Callable[[StreamResampler, bytes], np.ndarray]
_Group: TypeAlias = tuple[list[StreamResampler], list[bytes], list[Done]]

#: Streams per product at most: bounds the scratch memory (the windows of 32 streams
#: 16 -> 8 kHz are 0.77 MB, about a core's L2 cache here) and the time one pass holds
#: the loop (~0.15 ms).
DEFAULT_MAX_BATCH: Final = 32

_IN: Final[dict[str, tuple[_Many, _One]]] = {
    "pcmu": (process_ulaw_many, StreamResampler.process_ulaw),
    "pcma": (process_alaw_many, StreamResampler.process_alaw),
}
_OUT: Final[dict[str, tuple[_Many, _One]]] = {
    "pcmu": (process_to_ulaw_many, StreamResampler.process_to_ulaw),
    "pcma": (process_to_alaw_many, StreamResampler.process_to_alaw),
}
_BIG_ENDIAN = sys.byteorder == "big"


class ResampleBatcher:
    """Converts handed-out frames of many calls together, at the end of the loop turn.

    Args:
        loop: the event loop whose turns delimit a batch.
        max_batch: streams per product at most.
        on_converted: called with (frames, products) after each conversion pass.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_converted: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._loop = loop
        self._max = max_batch
        #: Told (frames, products) after each conversion pass (the server's metrics).
        self._on_converted = on_converted
        self._in: dict[tuple[str, int, int, int], _Group] = {}
        self._out: dict[tuple[str, int, int, int], _Group] = {}
        self._ready: deque[tuple[Done, bytes]] = deque()
        self._scheduled = False
        #: Frames converted, and products run (a frame converted alone counts as one).
        self.frames = 0
        self.products = 0

    def add_inbound(self, step: BatchStep, payload: bytes, done: Done) -> None:
        """Convert G.711 ``payload`` to the bot's rate; ``done(pcm)`` gets the frame."""
        self._add(self._in, step, payload, done)

    def add_outbound(self, step: BatchStep, pcm: bytes, done: Done) -> None:
        """Convert bot ``pcm`` to a G.711 wire frame; ``done(frame)`` gets it."""
        self._add(self._out, step, pcm, done)

    def _add(
        self,
        groups: dict[tuple[str, int, int, int], _Group],
        step: BatchStep,
        data: bytes,
        done: Done,
    ) -> None:
        rs, encoding = step
        key = (encoding, rs.in_rate, rs.out_rate, len(data))
        group = groups.get(key)
        if group is None:
            groups[key] = ([rs], [data], [done])
        else:
            group[0].append(rs)
            group[1].append(data)
            group[2].append(done)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._on_turn)

    def _on_turn(self) -> None:
        try:
            self.flush()
        finally:
            self._scheduled = False

    @property
    def pending(self) -> bool:
        """True while some frame waits for its conversion or its result's delivery."""
        return bool(self._in or self._out or self._ready)

    def flush(self) -> None:
        """Convert everything pending now and deliver each result, in order."""
        ready = self._ready
        while True:
            if ready:
                done, result = ready.popleft()
                try:
                    done(result)
                except Exception:  # the receivers catch their own; never harm the others
                    logger.exception("resample batch: delivering a result failed")
            elif self._in:
                groups, self._in = self._in, {}
                self._convert(groups, _IN, inbound=True)
            elif self._out:
                groups, self._out = self._out, {}
                self._convert(groups, _OUT, inbound=False)
            else:
                return

    def _convert(
        self,
        groups: dict[tuple[str, int, int, int], _Group],
        fns: dict[str, tuple[_Many, _One]],
        *,
        inbound: bool,
    ) -> None:
        frames, products = self.frames, self.products
        step = self._max
        for key, (streams, datas, dones) in groups.items():
            many, one = fns[key[0]]
            for start in range(0, len(streams), step):
                part = streams[start : start + step]
                b = len(part)
                try:
                    if b == 1:
                        out = one(part[0], datas[start])
                    else:
                        out = many(part, b"".join(datas[start : start + step]))
                except Exception:  # cannot happen for what sessions hand out; if it does,
                    # convert one by one so that only a stream that fails loses its frame
                    logger.exception("resample batch failed; converting its frames one by one")
                    self._one_by_one(part, datas[start:], dones[start:], one, inbound)
                    continue
                blob = _wire_bytes(out, inbound)
                size = len(blob) // b
                self._ready.extend(
                    (dones[start + i], blob[i * size : (i + 1) * size]) for i in range(b)
                )
                self.frames += b
                self.products += 1
        if self._on_converted is not None:
            self._on_converted(self.frames - frames, self.products - products)

    def _one_by_one(
        self,
        streams: list[StreamResampler],
        datas: list[bytes],
        dones: list[Done],
        one: _One,
        inbound: bool,
    ) -> None:
        for rs, data, done in zip(streams, datas, dones, strict=False):
            try:
                out = one(rs, data)
            except Exception:
                # Its session notices at its next step (a conversion never returned) and
                # ends that call with 1011; the other calls are not affected.
                logger.exception("resample batch: converting a frame failed")
                continue
            self._ready.append((done, _wire_bytes(out, inbound)))
            self.frames += 1
            self.products += 1


def _wire_bytes(out: np.ndarray, inbound: bool) -> bytes:
    """A conversion's rows as bytes: int16 PCM little-endian (inbound), codes (outbound)."""
    if inbound and _BIG_ENDIAN:  # pragma: no cover - little-endian hosts here
        out = out.astype("<i2")
    return out.tobytes()
