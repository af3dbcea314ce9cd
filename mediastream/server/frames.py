"""RFC 6455 §5.2 frame boundaries, and the few frames the server writes itself.

Sans-I/O, on bytes: :class:`FrameSplitter` cuts a client's byte stream into whole frames
before anything parses them, so that every frame is either taken by the fast path (a
whole, masked, unfragmented text frame: unmasked and decoded here) or handed to
websockets' parser *whole*, and that parser always stands between two frames.

Frame layout (§5.2): byte 0 is FIN, RSV1-3 and the opcode; byte 1 the MASK bit and a
7-bit length, 126 meaning a 16-bit and 127 a 64-bit length in network order; then the
4-byte masking key when MASK is set (every client frame, §5.1), then the payload.
"""

from __future__ import annotations

from typing import Final

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships it compiled for CPython
    from websockets.utils import apply_mask

__all__ = [
    "FIN_TEXT",
    "FrameHead",
    "FrameSplitter",
    "close_frame_code",
    "frame_head",
    "text_frame_header",
]

#: Byte 0 of an unfragmented text frame without extension bits: FIN + opcode 0x1.
FIN_TEXT: Final = 0x81
_MASK: Final = 0x80
_OPCODE: Final = 0x0F
_FIN: Final = 0x80
_CLOSE: Final = 0x8

#: (byte 0, header length including the masking key, payload length, masked).
FrameHead = tuple[int, int, int, bool]


def frame_head(data: bytes, pos: int) -> FrameHead | None:
    """The head of the frame that starts at ``data[pos]``, or ``None`` until all of its
    header bytes (length and masking key included) have arrived."""
    available = len(data) - pos
    if available < 2:
        return None
    second = data[pos + 1]
    masked = bool(second & _MASK)
    length = second & 0x7F
    size = 6 if masked else 2
    if length == 126:
        size += 2
        if available < size:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
    elif length == 127:
        size += 8
        if available < size:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    elif available < size:
        return None
    return data[pos], size, length, masked


class FrameSplitter:
    """Received bytes in, whole frames out (see the module docstring).

    Args:
        limit: the message size limit; a frame that declares more is handed over as
            soon as its header is in (websockets refuses it from the header alone, 1009),
            so nothing that size is ever buffered.
    """

    __slots__ = ("_buf", "_limit", "_pos")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = b""
        self._pos = 0

    @property
    def waiting(self) -> int:
        """Bytes received and not yet taken."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes (no copy when nothing was left over)."""
        pos = self._pos
        self._buf = data if pos >= len(self._buf) else self._buf[pos:] + data
        self._pos = 0

    def take_all(self) -> bytes:
        """Everything not yet taken (once websockets parses the rest on its own)."""
        data = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        return data

    def next(self, fast: bool) -> str | bytes | None:
        """The next whole frame, or ``None`` until one has arrived.

        With ``fast``, a whole masked unfragmented text frame comes back as its text
        (``str``; :class:`UnicodeDecodeError` when it is not UTF-8, RFC 6455 §8.1); any
        other frame, or every frame without ``fast``, as its bytes (``bytes``), for
        websockets' parser.
        """
        data, pos = self._buf, self._pos
        size = len(data)
        if fast and size - pos >= 6 and data[pos] == FIN_TEXT:
            second = data[pos + 1]
            if second & _MASK and second != 0xFF:
                # The common case, read without building a head: a masked text frame
                # with a 7- or 16-bit length (every provider's media message).
                length = second & 0x7F
                start = pos + 6
                if length == 126:
                    start = pos + 8
                    if start > size:
                        return None
                    length = (data[pos + 2] << 8) | data[pos + 3]
                if length <= self._limit:
                    end = start + length
                    if end > size:
                        return None
                    self._pos = end
                    return apply_mask(data[start:end], data[start - 4 : start]).decode()
        head = frame_head(data, pos)
        if head is None:
            return None
        first, size, length, masked = head
        if length > self._limit:
            return self.take_all()
        end = pos + size + length
        if end > len(data):
            return None
        self._pos = end
        if fast and first == FIN_TEXT and masked:
            start = pos + size
            return apply_mask(data[start:end], data[start - 4 : start]).decode()
        return data[pos:end] if pos or end < len(data) else data


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of ``size`` payload bytes
    (server to client, §5.2: the shortest length encoding, as websockets writes it)."""
    if size < 126:
        return bytes((FIN_TEXT, size))
    if size < 65536:
        return bytes((FIN_TEXT, 126, size >> 8, size & 0xFF))
    return bytes((FIN_TEXT, 127)) + size.to_bytes(8, "big")


def close_frame_code(data: bytes) -> tuple[int, str] | None:
    """(code, reason) of the unmasked close frame at the start of ``data`` -- the close
    frame a server writes (§5.5.1) -- or ``None`` if ``data`` does not start with one."""
    if len(data) < 2 or data[0] != _FIN | _CLOSE or data[1] & _MASK:
        return None
    length = data[1] & 0x7F
    if length < 2 or len(data) < 2 + length:  # no status code: 1005, §7.1.5
        return (1005, "") if length == 0 else None
    code = int.from_bytes(data[2:4], "big")
    return code, data[4 : 2 + length].decode("utf-8", "replace")
