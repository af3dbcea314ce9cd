"""Messages out of the data frames websockets' sans-I/O parser yields (RFC 6455 §5.4, §5.6).

websockets' sans-I/O layer checks frames -- opcodes, reserved bits, masking, control
frame sizes, the order of fragments, the message size limit -- and yields them one by
one; putting fragments together and checking that text is UTF-8 is the I/O layer's job,
here :class:`Assembler`. Text is checked fragment by fragment (§8.1: fail fast, on the
fragment where it breaks); a message that is not valid UTF-8 raises
:class:`UnicodeDecodeError`, which the socket answers with close 1007.
"""

from __future__ import annotations

import codecs

from websockets.frames import Frame, Opcode

__all__ = ["Assembler"]


class Assembler:
    """Fragments in, whole messages out (``str`` for text, ``bytes`` for binary)."""

    __slots__ = ("_decoder", "_parts")

    def __init__(self) -> None:
        self._parts: list[bytes] | None = None
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def open(self) -> bool:
        """True while a fragmented message has begun and not ended."""
        return self._parts is not None

    def add(self, frame: Frame) -> str | bytes | None:
        """One data frame websockets accepted: the message it completes, or ``None``.

        Raises :class:`UnicodeDecodeError` for text that is not UTF-8 (the message is
        then dropped).
        """
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        if frame.opcode is not Opcode.CONT:
            if frame.fin:
                return data.decode() if frame.opcode is Opcode.TEXT else data
            self._parts = []
            self._decoder = (
                codecs.getincrementaldecoder("utf-8")() if frame.opcode is Opcode.TEXT else None
            )
        parts = self._parts
        assert parts is not None  # websockets refuses a continuation with none open
        decoder = self._decoder
        if decoder is not None:
            try:
                decoder.decode(data, final=frame.fin)
            except UnicodeDecodeError:
                self._parts = self._decoder = None
                raise
        parts.append(data)
        if not frame.fin:
            return None
        self._parts = self._decoder = None
        message = b"".join(parts)
        return message if decoder is None else message.decode()
