"""Media messages per second through our protocols vs Pipecat 1.14's serializers.

Both sides get the same documented 20 ms media message (``tests/vectors``), in one
process, with no sockets, in compact JSON as the providers' serializers write it (no
spaces; the caller simulator in ``mediastream.caller`` writes it so too). Pipecat's
``deserialize``/``serialize`` always include G.711 (audioop) and, when the pipeline
rate differs from 8 kHz, soxr stream resampling, so two comparisons are printed:

* **wire only**: our ``receive``/``send`` (JSON + base64 + validation + event object),
  codec work excluded from ours, against Pipecat's whole call at 8 kHz, where its
  resampler is a pass-through and the only codec work left is ``audioop``. This
  flatters Pipecat by the cost of ``audioop`` (tiny) and is the JSON+base64 share.
* **codec included** in both, at the pipeline rate (default 8 and 16 kHz): ours adds
  ``audiocodecs.ulaw_decode`` + ``StreamResampler`` on the way in and
  ``StreamResampler`` + ``ulaw_encode`` on the way out.

Ours recognises a media message by the template the stream's first media message
taught (``mediastream/protocols/_fastmedia.py``), without a JSON parse; two more rows
show what a message that template does not fit costs (the full parse with every check,
templates off) and the floor any JSON-parsing receive has (C scanner + ``a2b_base64``
+ the event, no validation).

Each figure is the median over ``--reps`` repetitions of ``--n`` messages (µs per
message); a ratio below 1 means we are faster. The cases take turns within each
repetition so that load from elsewhere hits them alike, and time is this process's CPU
time (``time.process_time``), not wall time: on a shared machine the scheduler's
preemptions would otherwise dominate the spread. Target (issue 3): our receive +
send of one media message at most 1/3 of Pipecat's serializer time (the wire-only row;
the codec rows depend on ``audiocodecs`` and are reported, not judged).

Run: ``python -m bench protocols [--n 20000] [--reps 7] [--rates 8000,16000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
PROVIDERS = ("twilio", "telnyx", "plivo")
TARGET = 1 / 3


def _codecs() -> tuple[Any, Any, Any] | None:
    """``(ulaw_decode, ulaw_encode, StreamResampler)`` or ``None`` if not built yet."""
    try:
        from audiocodecs import StreamResampler, ulaw_decode, ulaw_encode
    except ImportError:
        try:
            from audiocodecs.g711 import ulaw_decode, ulaw_encode
            from audiocodecs.resample import StreamResampler
        except ImportError:
            return None
    return ulaw_decode, ulaw_encode, StreamResampler


def _vector(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / provider / f"{name}.json").read_text())
    return data


def _loop(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


async def _aloop(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - start) / n * 1e6


def _measure(runner: asyncio.Runner, cases: dict[str, Callable[[], Any]], asynchronous: set[str],
             n: int, reps: int) -> dict[str, float]:
    """Median µs per call of each case. The cases take turns within every repetition, so
    a burst of load from elsewhere on the machine hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            gc.collect()
            if name in asynchronous:
                samples[name].append(runner.run(_aloop(fn, n)))
            else:
                samples[name].append(_loop(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def _compact(message: Any) -> str:
    return json.dumps(message, separators=(",", ":"))


def _ours(provider: str, *, templates: bool = True) -> tuple[Any, str, bytes]:
    """A started protocol, its media message and that message's 160 μ-law bytes.

    The protocol has received the media message once, so that it has learnt the
    template (or, with ``templates=False``, is barred from learning one).
    """
    from mediastream.protocols import protocol_for

    protocol = protocol_for(provider)
    if not templates:
        protocol._learn_budget = 0  # private switch: always the full parse
    for message in _vector(provider, "outbound")["messages"]:
        protocol.receive(_compact(message))
    media = next(m for m in _vector(provider, "session")["messages"] if m["event"] == "media")
    wire = _compact(media)
    protocol.receive(wire)
    assert (protocol._template is not None) is templates
    return protocol, wire, base64.b64decode(media["media"]["payload"])


async def _pipecat(provider: str, stream_id: str, rate: int, media: str,
                   pcm: bytes) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Pipecat's serializer for ``provider`` at pipeline ``rate``: (deserialize, serialize)."""
    from pipecat.frames.frames import OutputAudioRawFrame
    from pipecat.serializers.plivo import PlivoFrameSerializer
    from pipecat.serializers.telnyx import TelnyxFrameSerializer
    from pipecat.serializers.twilio import TwilioFrameSerializer

    serializer: Any
    if provider == "twilio":
        serializer = TwilioFrameSerializer(
            stream_id, params=TwilioFrameSerializer.InputParams(auto_hang_up=False,
                                                                sample_rate=rate))
    elif provider == "telnyx":
        serializer = TelnyxFrameSerializer(
            stream_id, "PCMU", "PCMU",
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=False, sample_rate=rate))
    else:
        serializer = PlivoFrameSerializer(
            stream_id, params=PlivoFrameSerializer.InputParams(auto_hang_up=False,
                                                               sample_rate=rate))
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=rate))
    frame = OutputAudioRawFrame(pcm, rate, 1)
    for _ in range(10):  # warm up; a fresh soxr stream may hold back its first chunk
        await serializer.deserialize(media)
        await serializer.serialize(frame)
    assert await serializer.deserialize(media) is not None
    assert await serializer.serialize(frame) is not None
    return (lambda: serializer.deserialize(media)), (lambda: serializer.serialize(frame))


def _floor(protocol: Any) -> Callable[[str], list[Any]]:
    """The least any JSON-parsing receive can do: C scan, base64, the event, no checks."""
    from binascii import a2b_base64

    from mediastream.protocols._json import scan_once
    from mediastream.protocols.base import _audio_received

    fmt, seq_key = protocol.call.inbound_format, protocol.SEQUENCE_KEY

    def receive(message: str) -> list[Any]:
        data, _ = scan_once(message, 0)
        media = data["media"]
        audio = a2b_base64(media["payload"], strict_mode=True)
        timestamp = int(media["timestamp"])
        return [_audio_received(audio, fmt, media["track"], int(data[seq_key]),
                                int(media["chunk"]), timestamp, timestamp)]

    return receive


def _our_cases(protocol: Any, parsing: Any, media: str, ulaw: bytes, rate: int, pcm: bytes,
               codecs: tuple[Any, Any, Any] | None) -> dict[str, Callable[[], Any]]:
    """Our receive/send, wire only, and with G.711 + resampling to/from ``rate``;
    ``parsing`` is a protocol without templates (the full parse)."""
    from mediastream.protocols import SendAudio

    send_cmd = SendAudio(ulaw)
    floor = _floor(protocol)
    cases: dict[str, Callable[[], Any]] = {
        "recv": lambda: protocol.receive(media),
        "send": lambda: protocol.send(send_cmd),
        "parse": lambda: parsing.receive(media),
        "floor": lambda: floor(media),
    }
    if codecs is None:
        return cases
    import numpy as np

    ulaw_decode, ulaw_encode, resampler_cls = codecs
    up, down = resampler_cls(8000, rate), resampler_cls(rate, 8000)
    pcm_array = np.frombuffer(pcm, dtype=np.int16)

    def codec_in() -> object:
        [event] = protocol.receive(media)
        return up.process(ulaw_decode(event.payload))

    def codec_out() -> object:
        return protocol.send(SendAudio(ulaw_encode(down.process(pcm_array)).tobytes()))

    cases["c_recv"], cases["c_send"] = codec_in, codec_out
    return cases


def _row(label: str, ours: float | None, theirs: float) -> str:
    if ours is None:
        return f"  {label:<44} {'n/a':>9} {theirs:>10.2f} {'':>8}"
    return f"  {label:<44} {ours:>9.2f} {theirs:>10.2f} {ours / theirs:>8.3f}"


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table; return 0 if every wire-only ratio meets 1/3."""
    parser = argparse.ArgumentParser(prog="bench protocols", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="messages per repetition")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (median taken)")
    parser.add_argument("--rates", default="8000,16000", help="pipeline rates, Hz")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    codecs = _codecs()

    print(f"python {sys.version.split()[0]}, {args.n} messages x {args.reps} reps, "
          "median µs per 20 ms media message (lower is better)")
    if codecs is None:
        print("audiocodecs not importable yet: codec-included rows for ours are n/a")
    print(f"  {'':<44} {'ours':>9} {'pipecat':>10} {'ratio':>8}")
    verdict = True
    ours_rates: dict[str, tuple[float, float]] = {}
    with asyncio.Runner() as runner:
        for provider in args.providers.split(","):
            protocol, media, ulaw = _ours(provider)
            parsing, _, _ = _ours(provider, templates=False)
            stream_id = protocol.call.stream_id
            for rate in rates:
                # 20 ms of PCM at the pipeline rate, as the bot hands it to the transport.
                pcm = b"".join(((i * 211) % 65536 - 32768).to_bytes(2, "little", signed=True)
                               for i in range(rate // 50))
                p_recv_fn, p_send_fn = runner.run(
                    _pipecat(provider, stream_id, rate, media, pcm))
                cases = _our_cases(protocol, parsing, media, ulaw, rate, pcm, codecs)
                cases["p_recv"], cases["p_send"] = p_recv_fn, p_send_fn
                m = _measure(runner, cases, {"p_recv", "p_send"}, args.n, args.reps)
                pipecat_total = m["p_recv"] + m["p_send"]
                print(f"{provider} @ pipeline {rate} Hz")
                wire = m["recv"] + m["send"]
                if rate == 8000:
                    print(_row("in : wire only (ours: no codec)", m["recv"], m["p_recv"]))
                    print(_row("in : no template fits: full parse + checks", m["parse"],
                               m["p_recv"]))
                    print(_row("in : floor of any JSON parser (see _floor)", m["floor"],
                               m["p_recv"]))
                    print(_row("out: wire only (ours: no codec)", m["send"], m["p_send"]))
                    print(_row("in+out wire only       (target <= 0.333)", wire,
                               pipecat_total))
                    verdict = verdict and wire / pipecat_total <= TARGET
                    ours_rates[provider] = (m["recv"], m["send"])
                else:
                    print(_row("in+out wire only vs Pipecat incl. resampling", wire,
                               pipecat_total))
                c_recv, c_send = m.get("c_recv"), m.get("c_send")
                both = None if c_recv is None or c_send is None else c_recv + c_send
                print(_row("in : codec included", c_recv, m["p_recv"]))
                print(_row("out: codec included", c_send, m["p_send"]))
                print(_row("in+out codec included", both, pipecat_total))
    for provider, (recv, send) in ours_rates.items():
        print(f"{provider}: ours {1e6 / recv:,.0f} receives/s and {1e6 / send:,.0f} sends/s "
              "on one core (wire only), i.e. {:,.0f} calls at 50+50 msg/s".format(
                  1e6 / (50 * (recv + send))))
    print("target met" if verdict else "target NOT met")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
