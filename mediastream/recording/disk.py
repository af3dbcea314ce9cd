"""Recording files on disk: one thread writes them all, each WAV readable at every step.

File I/O never runs on the event loop: the loop hands each call's blocks (about a second
of audio, ~64 KB at 16 kHz stereo) to :class:`DiskWriter`, one daemon thread per server
that performs every recording's operations in order. A write to the page cache takes
tens of microseconds, but a slow or full disk can block for much longer; on the thread
that stalls only the recordings, never a call.

Crash tolerance (:class:`WavSink`): the 44-byte header is written first with sizes of
zero, and after each block the RIFF and ``data`` sizes are rewritten (``pwrite``) to
cover exactly the audio written so far -- data first, sizes second, so whatever moment
the process dies at, the header never claims more than the file holds. A killed server
therefore leaves a standard PCM WAV that Python's :mod:`wave`, libsndfile and
``scipy.io.wavfile`` read up to the last block written (at most ~1 s plus
:data:`~.timeline.MARGIN_S` lost). The page cache survives a process crash; a power cut
is not covered (that would need an ``fsync`` per block).

A failed operation (disk full, the directory gone, EFBIG) logs one line naming the
call and the file, closes the file and turns every later operation of that recording
into a no-op; the flag :attr:`WavSink.failed` tells the loop to stop buffering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

__all__ = ["MAX_BACKLOG_BYTES", "WAKE_S", "DiskWriter", "WavSink", "safe_name"]

logger = logging.getLogger("mediastream.recording")

#: How often the writer thread looks for work (a crash loses at most this much more).
WAKE_S: Final = 0.25
#: Bytes handed to the thread but not yet written beyond which blocks are dropped (and
#: the recording stopped): a disk that cannot keep up must not grow memory without end.
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME: Final = 100
#: Recordings are personal data: owner and group only (README: privacy).
_MODE: Final = 0o640


def safe_name(call_id: str) -> str:
    """A file-name stem for ``call_id``: letters, digits, ``.``, ``_``, ``-`` only,
    never starting with a dot (no ``..``, no hidden files, no path separators)."""
    name = _UNSAFE.sub("_", call_id).lstrip(".")[:_MAX_NAME]
    return name or "call"


def _create(path: Path) -> int:
    """Open ``path`` for writing, truncated, readable by owner and group only."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                   _MODE)


def _header(rate: int, channels: int, data_bytes: int) -> bytes:
    block = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
        rate, rate * block, block, 16, b"data", data_bytes)


class WavSink:
    """One recording's files (used on the writer thread only, but ``failed``)."""

    def __init__(self, directory: Path, stem: str, call_id: str, rate: int) -> None:
        self.directory = directory
        self.stem = stem
        self.call_id = call_id
        self.rate = rate
        self.wav: Path | None = None
        self.failed = False
        self._fd = -1
        self._data = 0
        self._events: Any = None

    # --- operations (writer thread)
    def open(self, description: dict[str, Any]) -> None:
        """Create ``<stem>.wav`` (``-2``, ``-3``... when taken), its header, and the
        sidecar with the description (``complete: false`` until :meth:`close`)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for n in range(1, 1000):
            stem = self.stem if n == 1 else f"{self.stem}-{n}"
            path = self.directory / f"{stem}.wav"
            try:
                self._fd = os.open(path, flags, _MODE)
            except FileExistsError:
                continue
            self.stem, self.wav = stem, path
            break
        else:
            raise FileExistsError(f"{self.stem}.wav and 998 alternatives exist")
        os.write(self._fd, _header(self.rate, 2, 0))
        description["recording"] = self.wav.name
        self._write_json(description)
        self._events = os.fdopen(_create(self.directory / f"{self.stem}.events.jsonl"), "w",
                                 encoding="utf-8")

    def append(self, stereo: bytes, events: list[dict[str, Any]]) -> None:
        """One block of interleaved samples, then the header's sizes; the events."""
        if stereo:
            view = memoryview(stereo)
            try:
                while view:  # a write may be short (a size limit reached): go on or fail
                    done = os.write(self._fd, view)
                    view = view[done:]
                    self._data += done
            finally:  # the header covers whole sample frames written, even on failure
                self._data -= self._data % 4
                os.pwrite(self._fd, struct.pack("<I", 36 + self._data), 4)
                os.pwrite(self._fd, struct.pack("<I", self._data), 40)
        if events:  # one line per block: a JSON array of its events (one dumps call)
            self._events.write(json.dumps(events, separators=(",", ":")) + "\n")
            self._events.flush()

    def close(self, description: dict[str, Any]) -> None:
        """The final sidecar: the description, the end, and every event in order."""
        os.close(self._fd)
        self._fd = -1
        self._events.close()
        events_path = self.directory / f"{self.stem}.events.jsonl"
        with open(events_path, encoding="utf-8") as f:
            description["events"] = [e for line in f if line.strip() for e in json.loads(line)]
        description["recording"] = self.wav.name if self.wav is not None else None
        description["complete"] = True
        self._write_json(description)
        events_path.unlink()

    def fail(self, what: str, exc: BaseException) -> None:
        """Log once, close what is open, ignore everything after."""
        self.failed = True
        where = self.wav if self.wav is not None else self.directory / f"{self.stem}.wav"
        logger.error("[call %s] recording to %s failed while %s (%s); recording stopped for "
                     "this call, the call goes on", self.call_id, where, what, exc)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._events is not None:
            with contextlib.suppress(OSError):
                self._events.close()

    def _write_json(self, description: dict[str, Any]) -> None:
        path = self.directory / f"{self.stem}.json"
        tmp = path.with_name(path.name + ".tmp")
        with os.fdopen(_create(tmp), "w", encoding="utf-8") as f:
            f.write(json.dumps(description, indent=1) + "\n")
        os.replace(tmp, path)


class DiskWriter:
    """The thread performing every recording's file operations, in order.

    It wakes every :data:`WAKE_S` and performs what was queued meanwhile, rather than
    being woken per operation: with many calls, one wake-up (and one hand-over of the
    interpreter lock) serves the blocks of all of them.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[WavSink, str, Callable[[], None], int]] = deque()
        self._lock = threading.Lock()
        self._backlog = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mediastream-recorder",
                                        daemon=True)  # started by the first submit

    @property
    def backlog(self) -> int:
        """Bytes handed over and not yet written."""
        return self._backlog

    def submit(self, sink: WavSink, what: str, op: Callable[[], None], size: int = 0) -> bool:
        """Queue ``op`` for ``sink``; ``False`` (not queued) while the backlog is full."""
        with self._lock:
            if size and self._backlog + size > MAX_BACKLOG_BYTES:
                return False
            self._backlog += size
        self._queue.append((sink, what, op, size))  # deque.append: atomic, no wake-up
        if not self._thread.is_alive() and not self._stop.is_set():
            with self._lock:
                if self._thread.ident is None:
                    self._thread.start()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the thread (blocks: run it off the loop)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        stop = self._stop
        while True:
            stopping = stop.wait(WAKE_S)
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            sink, what, op, size = queue.popleft()
            try:
                if not sink.failed:
                    op()
            except Exception as exc:  # OSError mostly; anything else must not kill us
                sink.fail(what, exc)
            finally:
                if size:
                    with self._lock:
                        self._backlog -= size
