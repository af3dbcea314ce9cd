"""Media messages recognised by one regular expression instead of a JSON parse.

A provider sends its ~50 media messages a second from one serializer: the same keys in
the same order with the same separators, only the numbers, the payload and perhaps the
track changing. After a media message has been accepted by the full parse,
:func:`learn_media_template` checks whether the message is exactly what
``json.dumps`` renders from the parsed object with compact (``,`` ``:``) or default
(``, `` ``: ``) separators, i.e. a shape it can describe precisely, and if so compiles
that shape into one regex. ``MediaStreamProtocol.receive`` then tries that regex's
``fullmatch`` first and falls back to the full parse on any mismatch. Learning from
the stream's own messages, rather than from shapes written down here, fits whatever
key order a provider really uses (documented examples show one order but do not
promise it) and extra string fields such as Plivo's ``extra_headers``.

Why a match gives exactly what the full parse would (the fallback handles the rest):

* The regex is the message's own rendering with every value the media handler reads
  replaced by a group that admits only text whose JSON decoding is the text itself:
  decimal numbers (``"12"`` or ``12``, no sign, fraction, exponent or leading zero on a
  JSON number), strings without ``"``, ``\\`` or control characters (JSON forbids raw
  control characters; excluding the backslash rules out every escape), and a payload
  without ``"`` that strict ``a2b_base64`` then accepts, which it does only for the
  base64 alphabet (see ``_PAYLOAD``). Values the handler ignores (Plivo's
  ``extra_headers``) must be strings of the same escape-free kind; anything else makes
  the shape unlearnable.
* Keys and separators are literals, so a matching message is a valid JSON object with
  the same keys, each exactly once (no duplicate key whose last value JSON would keep).
  The stream id is a group of the escape-free string kind, which the caller compares
  with the started stream's id: a message for another stream, or spelling the id with
  an escape, falls back. Keeping the id out of the pattern makes the pattern the same
  for every stream of one provider's serializer, so it is compiled once per process
  (:data:`_COMPILED`), not once per call: compiling is a fraction of a millisecond,
  which at a hundred call set-ups a second was 7 % of a server's CPU.
* Numbers are limited to 19 digits, the bound the full parse applies to decimal
  strings; longer JSON numbers (valid there) simply fall back.

What the regex cannot see, the caller checks before trusting a match: the payload
length bound, the message length bound, strict base64 decoding, and the L16 byte
count. A failure of any falls back to the full parse, which then raises its usual
error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeAlias

from ._fields import MAX_DIGITS

__all__ = ["MediaMatcher", "learn_media_template"]

#: A compiled template's ``fullmatch``.
MediaMatcher: TypeAlias = Callable[[str], "re.Match[str] | None"]

_FIELDS = ("sequence", "track", "chunk", "timestamp", "payload", "stream")
#: A character of a string read as its text: anything but a quote, a backslash (so no
#: escape) or a control character. Spelt as the negated class: the positive one
#: (``[ !#-\[\]-\U0010ffff]``) matches ~10 % faster on a short value but takes ~1.6 ms
#: to compile per use (re builds a charset up to U+10FFFF), and a template is compiled
#: per stream: ~3 ms of call set-up for ~0.02 µs a message, a loss on any call shorter
#: than an hour (bench/bench_soak.py's sequential calls spent 90 % of their set-up here).
_TEXT_CHAR = r'[^"\\\x00-\x1f]'
_TEXT = f'"({_TEXT_CHAR}*)"'
_IGNORED_TEXT = f'"{_TEXT_CHAR}*"'
_NUMBER_TEXT = f'"([0-9]{{1,{MAX_DIGITS}}})"'
_NUMBER = f"(0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
#: Anything up to the closing quote: the caller's strict ``a2b_base64`` accepts only
#: the base64 alphabet (Python docs, binascii: "only valid base64 data will be
#: converted"; tests/test_protocol_fastpath.py checks every code point), so an escape,
#: a control character or any other text makes it fall back to the full parse.
_PAYLOAD = r'"([^"]*)"'
_SEPARATORS = ((",", ":"), (", ", ": "))
#: Longest regex source compiled (about 250 characters for the providers' messages):
#: the key names and the stream id are literals in it, and compiling costs time
#: linear in its length.
_MAX_PATTERN = 2000
#: Compiled templates by pattern: one per serializer shape seen (bounded: cleared when
#: full, as re's own cache is).
_COMPILED: dict[str, MediaMatcher] = {}
_MAX_COMPILED = 64


def learn_media_template(
    message: str, data: dict[str, Any], stream_key: str, sequence_key: str, stream_id: str
) -> tuple[MediaMatcher, int, int, int, int, int, int] | None:
    """The template of ``message`` (already parsed into ``data``), or ``None``.

    The template is ``fullmatch`` and the indices, in ``fullmatch(message).groups()``
    for a message of the same shape, of the sequence number, track, chunk, timestamp
    (numbers as decimal text), the payload text and the stream id (which the caller
    must compare with the started stream's). ``stream_id`` is the started stream's:
    the taught message must carry it.

    ``None`` when the message is not exactly a ``json.dumps`` rendering with one of
    the two usual separator pairs, when it lacks one of the six fields the media
    handler reads, or when a value is of a kind the template cannot admit (see the
    module docstring).
    """
    if data.get("event") != "media":
        return None
    for separators in _SEPARATORS:
        try:
            rendered = json.dumps(data, separators=separators, ensure_ascii=False)
        except (ValueError, RecursionError):  # what the parser took, nested too deeply
            return None
        if rendered == message:
            break
    else:
        return None
    top = {stream_key: "stream", sequence_key: "sequence"}
    builder = _Builder(separators, stream_id)
    if (
        not builder.members(data, top)
        or len(builder.groups) != len(_FIELDS)
        or not builder.has_stream
    ):
        return None
    pattern = "".join(builder.parts)
    if len(pattern) > _MAX_PATTERN:  # keys or a stream id far longer than any provider's
        return None
    fullmatch = _COMPILED.get(pattern)
    if fullmatch is None:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        fullmatch = _COMPILED[pattern] = re.compile(pattern).fullmatch
    if fullmatch(message) is None:  # e.g. an escape in a value: useless, do not keep it
        return None
    seq, track, chunk, timestamp, payload, stream = (
        builder.groups[field] - 1 for field in _FIELDS
    )
    return fullmatch, seq, track, chunk, timestamp, payload, stream


#: Keys of the ``media`` object and the fields they hold.
_MEDIA = {"track": "track", "chunk": "chunk", "timestamp": "timestamp", "payload": "payload"}


class _Builder:
    """Regex text for one parsed message, value by value, in the message's key order."""

    def __init__(self, separators: tuple[str, str], stream_id: str) -> None:
        self.stream_id = stream_id
        self.has_stream = False
        self.item_sep = re.escape(separators[0])
        self.key_sep = separators[1]
        self.parts: list[str] = []
        #: field name -> regex group number
        self.groups: dict[str, int] = {}

    def members(self, obj: dict[str, Any], fields: dict[str, str]) -> bool:
        """Append ``obj``; ``fields`` maps the keys the handler reads to field names."""
        top = fields is not _MEDIA
        self.parts.append(r"\{")
        for i, (key, item) in enumerate(obj.items()):
            if i:
                self.parts.append(self.item_sep)
            self.parts.append(re.escape(json.dumps(key, ensure_ascii=False) + self.key_sep))
            if top and key == "event":
                self.parts.append(re.escape('"media"'))
            elif top and key == "media":
                if type(item) is not dict or not self.members(item, _MEDIA):
                    return False
            elif not self.value(fields.get(key), item):
                return False
        self.parts.append(r"\}")
        return True

    def value(self, field: str | None, item: Any) -> bool:
        """Append the pattern admitting ``item``'s kind; ``False`` if there is none."""
        kind = type(item)
        if field is None:  # a value the handler ignores
            pattern = _IGNORED_TEXT if kind is str else None
        elif field == "payload":
            pattern = _PAYLOAD if kind is str else None
        elif field == "stream":
            if item != self.stream_id:
                return False
            self.has_stream = True
            pattern = _TEXT
        elif field == "track":
            pattern = _TEXT if kind is str else None
        elif kind is str:  # numbers as decimal text (Twilio, Telnyx)
            pattern = _NUMBER_TEXT
        else:  # or as JSON numbers (Plivo); type() is int excludes bool
            pattern = _NUMBER if kind is int else None
        if pattern is None:
            return False
        if field is not None:
            self.groups[field] = len(self.groups) + 1
        self.parts.append(pattern)
        return True
