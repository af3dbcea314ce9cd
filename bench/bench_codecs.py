"""G.711 and resampling: ``audiocodecs`` vs ``audioop``, the ``g711`` package and soxr.

Four tables:

1. **G.711 bulk**: 60 s of 8 kHz audio (480,000 samples) per call, ms.
2. **G.711 per frame**: one 20 ms frame (160 samples), µs per call.
3. **Resampling** 8→16, 16→8 and 24→8 kHz, 20 ms frames: CPU per frame, then measured
   quality, identically for each resampler (int16 in, int16 out, streamed in 20 ms
   frames): *withheld* = audio owed but not yet returned after 1 s of streaming;
   *latency* = withheld + the group delay of the returned stream, from the phases of
   steady tones 100 Hz–3.4 kHz (min–max; one number for linear-phase soxr);
   *ripple* = largest gain deviation over 0.1–3.4 kHz; *rejection* = weakest
   attenuation of anything above the lower Nyquist (aliases of 4–8 kHz tones when
   downsampling; images of tones up to 3.99 kHz when upsampling).  int16 output puts
   a floor near 100 dB under any rejection figure.
4. **Paths** for one frame: inbound 8 kHz μ-law → 16 kHz int16 and outbound 24 kHz
   int16 → 8 kHz μ-law bytes: ours fused (``StreamResampler.process_ulaw`` /
   ``process_to_ulaw``, what the session runs), ours in two calls (codec function and
   ``process``), and ``audioop`` + soxr.
5. **Batched resampling**, µs per 20 ms frame: B = 1, 8, 32 prepared streams fed one
   frame each, by one ``process_ulaw_many`` (8 kHz μ-law → 16 kHz) or
   ``process_to_ulaw_many`` (16 kHz → 8 kHz μ-law) call, joining of the B frames into
   its input included, against B per-stream ``process_ulaw`` / ``process_to_ulaw``
   calls.  Ratio = per-stream / batched (above 1: the batch is cheaper).

Each library is called with its natural types: ours takes bytes or int16 arrays and
returns arrays; ``audioop`` is bytes → bytes; the ``g711`` package decodes to and
encodes from float32.  Times are CPU time of this process (``time.process_time``),
the median of ``--reps`` repetitions in which the cases take turns; ratio = other/ours
(above 1: ours is faster).  soxr, ``g711`` and ``audioop`` are benchmark-only
dependencies.

Run: ``python -m bench codecs [--reps 7] [--quick]``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from audiocodecs import StreamResampler, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from audiocodecs.resample import process_to_ulaw_many, process_ulaw_many

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]
PAIRS = ((8000, 16000), (16000, 8000), (24000, 8000))


def _optional(name: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return __import__(name)
        except ImportError:
            return None


audioop = _optional("audioop")
soxr = _optional("soxr")
g711 = _optional("g711")


def blas_core() -> str:
    """Kernel family numpy's bundled OpenBLAS chose for this CPU ("n/a" if not found).

    The resampler's cost is mostly one small float64 matrix product, and OpenBLAS picks
    its kernels per CPU when it loads.  On AVX-512 CPUs it does not recognise (seen on
    AMD family 1Ah) it falls back to the AVX2 "Haswell" kernels, about half as fast at
    these sizes; ``OPENBLAS_CORETYPE=SkylakeX`` in the environment selects the AVX-512
    ones.  Results do not change: the resampler's sums are exact in any order.
    """
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))  # already loaded by numpy: same instance
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                core: bytes = fn()
                return f"OpenBLAS {core.decode()}"
    return "n/a"


# --- timing ---------------------------------------------------------------------------


def _per_call(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def measure(cases: Mapping[str, Callable[[], object]], n: int, reps: int) -> dict[str, float]:
    """Median seconds per call for each case; cases take turns within a repetition."""
    for fn in cases.values():  # warm up: tables, caches, filter designs
        for _ in range(min(n, 50)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            samples[name].append(_per_call(fn, n))
    return {name: statistics.median(v) for name, v in samples.items()}


def _row(label: str, values: list[float | None], unit: float, width: int = 10) -> str:
    cells = []
    ours = values[0]
    for v in values:
        cells.append(f"{v / unit:>{width}.2f}" if v is not None else f"{'n/a':>{width}}")
    for v in values[1:]:
        ratio = v / ours if (v is not None and ours) else None
        cells.append(f"{ratio:>8.1f}x" if ratio is not None else f"{'':>9}")
    return f"  {label:<22}" + "".join(cells)


# --- G.711 ----------------------------------------------------------------------------


def g711_cases(n_samples: int) -> dict[str, dict[str, Callable[[], object] | None]]:
    rng = np.random.default_rng(0)
    pcm = np.clip(rng.standard_normal(n_samples) * 4000, -32768, 32767).astype(np.int16)
    pcm_bytes = pcm.astype("<i2").tobytes()
    pcm_f32 = (pcm / 32768.0).astype(np.float32)
    ulaw = ulaw_encode(pcm).tobytes()
    alaw = alaw_encode(pcm).tobytes()
    ao, gp = audioop, g711
    return {
        "μ-law decode": {
            "ours": lambda: ulaw_decode(ulaw),
            "audioop": (lambda: ao.ulaw2lin(ulaw, 2)) if ao else None,
            "g711": (lambda: gp.decode_ulaw(ulaw)) if gp else None,
        },
        "μ-law encode": {
            "ours": lambda: ulaw_encode(pcm),
            "audioop": (lambda: ao.lin2ulaw(pcm_bytes, 2)) if ao else None,
            "g711": (lambda: gp.encode_ulaw(pcm_f32)) if gp else None,
        },
        "A-law decode": {
            "ours": lambda: alaw_decode(alaw),
            "audioop": (lambda: ao.alaw2lin(alaw, 2)) if ao else None,
            "g711": (lambda: gp.decode_alaw(alaw)) if gp else None,
        },
        "A-law encode": {
            "ours": lambda: alaw_encode(pcm),
            "audioop": (lambda: ao.lin2alaw(pcm_bytes, 2)) if ao else None,
            "g711": (lambda: gp.encode_alaw(pcm_f32)) if gp else None,
        },
    }


def print_g711(
    title: str, n_samples: int, n_calls: int, reps: int, unit: float, uname: str
) -> None:
    print(f"\n{title}")
    print(f"  {'':<22}{'ours':>10}{'audioop':>10}{'g711':>10}{'audioop/ours':>13}{'g711/ours':>10}")
    print(f"  {'':<22}{uname:>10}")
    for label, impls in g711_cases(n_samples).items():
        cases = {k: fn for k, fn in impls.items() if fn is not None}
        t = measure(cases, n_calls, reps)
        print(_row(label, [t.get("ours"), t.get("audioop"), t.get("g711")], unit))


# --- resampler adapters ---------------------------------------------------------------


class Stream(Protocol):
    def push(self, x: Int16Array) -> Int16Array: ...
    def finish(self) -> Int16Array: ...


class Ours:
    def __init__(self, a: int, b: int) -> None:
        self.r = StreamResampler(a, b)
        self.push = self.r.process
        self.finish = self.r.flush


class Soxr:
    def __init__(self, a: int, b: int, quality: str) -> None:
        self.r = soxr.ResampleStream(a, b, 1, dtype="int16", quality=quality)
        self.push = self.r.resample_chunk

    def finish(self) -> Int16Array:
        out: Int16Array = self.r.resample_chunk(np.zeros(0, np.int16), last=True)
        return out


def factories() -> dict[str, Callable[[int, int], Stream]]:
    out: dict[str, Callable[[int, int], Stream]] = {"ours": Ours}
    if soxr is not None:
        out["soxr VHQ"] = lambda a, b: Soxr(a, b, "VHQ")
        out["soxr HQ"] = lambda a, b: Soxr(a, b, "HQ")
    return out


def run_stream(
    make: Callable[[int, int], Stream], x: Int16Array, a: int, b: int, flush: bool = True
) -> Int16Array:
    s, frame = make(a, b), a // 50
    parts = [s.push(x[i : i + frame]) for i in range(0, x.shape[0], frame)]
    if flush:
        parts.append(s.finish())
    return np.concatenate(parts)


def _tone(f: float, rate: int, n: int, amp: float = 16000.0) -> Int16Array:
    # Phase 0.3 rad: a sine of phase 0 at exactly the output Nyquist samples to zeros.
    t = np.arange(n) / rate
    return np.rint(amp * np.sin(2 * np.pi * f * t + 0.3)).astype(np.int16)


def _fit(y: Int16Array, f: float, rate: int) -> tuple[float, float, FloatArray]:
    """(amplitude, phase, residual) of a sinusoid at f over the middle half of y."""
    lo, hi = y.shape[0] // 4, 3 * y.shape[0] // 4
    t = np.arange(lo, hi) / rate
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    seg = y[lo:hi].astype(np.float64)
    (p, q), *_ = np.linalg.lstsq(basis, seg, rcond=None)
    return math.hypot(p, q), math.atan2(q, p), seg - basis @ np.array([p, q])


def _db(power_ratio: float) -> float:
    return 10 * math.log10(max(power_ratio, 1e-30))


def quality(make: Callable[[int, int], Stream], a: int, b: int) -> dict[str, float]:
    n = a // 4
    # Withheld after 1 s of 20 ms frames.
    x = np.clip(np.random.default_rng(1).standard_normal(a) * 4000, -32768, 32767)
    got = run_stream(make, x.astype(np.int16), a, b, flush=False).shape[0]
    withheld = (b - got) / b  # seconds owed after 1 s of input
    # Gains and group delay of the returned stream, 100 Hz to 3.4 kHz.
    freqs = np.arange(100.0, 3401.0, 50.0)
    gains, phases = [], []
    for f in freqs:
        amp, phase, _ = _fit(run_stream(make, _tone(f, a, n), a, b), f, b)
        gains.append(20 * math.log10(amp / 16000.0))
        phases.append(phase)
    delay = -np.gradient(np.unwrap(np.array(phases)), 2 * np.pi * freqs)
    # Rejection above the lower Nyquist.
    worst = -math.inf
    nyq = min(a, b) / 2
    if b < a:
        for f in np.linspace(nyq, 0.499 * a, 12):
            y = run_stream(make, _tone(f, a, n), a, b)
            y = y[y.shape[0] // 4 : 3 * y.shape[0] // 4].astype(np.float64)
            worst = max(worst, _db(float(np.mean(y**2)) / (16000.0**2 / 2)))
    else:
        for f in np.linspace(3400.0, 0.499 * a, 12):
            _, _, res = _fit(run_stream(make, _tone(f, a, n), a, b), f, b)
            worst = max(worst, _db(float(np.mean(res**2)) / (16000.0**2 / 2)))
    return {
        "withheld_ms": withheld * 1e3,
        "latency_min_ms": (withheld + float(delay.min())) * 1e3,
        "latency_max_ms": (withheld + float(delay.max())) * 1e3,
        "ripple_db": float(np.max(np.abs(gains))),
        "rejection_db": -worst,
    }


def print_resampling(reps: int, n_frames: int, pairs: list[tuple[int, int]]) -> None:
    print("\nResampling, one 20 ms frame per call (int16 in and out)")
    makers = factories()
    header = f"  {'':<14}{'':<10}{'CPU µs':>8}{'ratio':>7}{'withheld':>10}{'latency ms':>14}"
    print(header + f"{'ripple dB':>11}{'reject dB':>11}")
    for a, b in pairs:
        frame = np.clip(np.random.default_rng(2).standard_normal(a // 50) * 4000, -32768, 32767)
        x = frame.astype(np.int16)
        streams = {name: make(a, b) for name, make in makers.items()}
        cases = {name: functools.partial(s.push, x) for name, s in streams.items()}
        t = measure(cases, n_frames, reps)
        for name, make in makers.items():
            q = quality(make, a, b)
            lat = (
                f"{q['latency_min_ms']:.2f}-{q['latency_max_ms']:.2f}"
                if q["latency_max_ms"] - q["latency_min_ms"] >= 0.01
                else f"{q['latency_max_ms']:.2f}"
            )
            ratio = t[name] / t["ours"]
            label = f"{a / 1000:g}k→{b / 1000:g}k" if name == "ours" else ""
            print(
                f"  {label:<14}{name:<10}{t[name] * 1e6:>8.2f}{ratio:>6.2f}x"
                f"{q['withheld_ms']:>8.2f}ms{lat:>14}{q['ripple_db']:>11.3f}"
                f"{q['rejection_db']:>11.1f}"
            )


# --- paths ----------------------------------------------------------------------------


def _reference_inbound(frame: bytes, quality: str) -> Callable[[], object]:
    stream = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality=quality)

    def run() -> object:
        return stream.resample_chunk(np.frombuffer(audioop.ulaw2lin(frame, 2), np.int16))

    return run


def _reference_outbound(frame: Int16Array, quality: str) -> Callable[[], object]:
    stream = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=quality)

    def run() -> object:
        return audioop.lin2ulaw(stream.resample_chunk(frame).tobytes(), 2)

    return run


def print_paths(reps: int, n_frames: int) -> None:
    print("\nOne frame through the codec path, µs per frame (ratio = other / ours fused)")
    rng = np.random.default_rng(3)
    inbound = ulaw_encode(
        np.clip(rng.standard_normal(160) * 4000, -32768, 32767).astype(np.int16)
    ).tobytes()
    outbound = np.clip(rng.standard_normal(480) * 4000, -32768, 32767).astype(np.int16)
    up, up2 = StreamResampler(8000, 16000), StreamResampler(8000, 16000)
    down, down2 = StreamResampler(24000, 8000), StreamResampler(24000, 8000)
    # "fused": StreamResampler.process_ulaw / process_to_ulaw, what the session runs;
    # "2-step": the codec function and process() as separate calls.
    cases_in: dict[str, Callable[[], object]] = {
        "ours fused": lambda: up.process_ulaw(inbound),
        "ours 2-step": lambda: up2.process(ulaw_decode(inbound)),
    }
    cases_out: dict[str, Callable[[], object]] = {
        "ours fused": lambda: down.process_to_ulaw(outbound).tobytes(),
        "ours 2-step": lambda: ulaw_encode(down2.process(outbound)).tobytes(),
    }
    names = ["ours fused", "ours 2-step"]
    if soxr is not None and audioop is not None:
        for q in ("VHQ", "HQ"):
            name = f"audioop+soxr {q}"
            cases_in[name] = _reference_inbound(inbound, q)
            cases_out[name] = _reference_outbound(outbound, q)
            names.append(name)
    print(f"  {'':<34}" + "".join(f"{n:>18}" for n in names))
    for label, cases in (
        ("in: 8k μ-law → 16k int16", cases_in),
        ("out: 24k int16 → 8k μ-law bytes", cases_out),
    ):
        t = measure(cases, n_frames, reps)
        base = t["ours fused"]
        cells = "".join(
            f"{t[n] * 1e6:>10.2f} ({t[n] / base:.2f}x)"
            if n != "ours fused"
            else f"{base * 1e6:>18.2f}"
            for n in names
        )
        print(f"  {label:<34}{cells}")


# --- batched resampling ---------------------------------------------------------------

BATCH_SIZES = (1, 8, 32)


def _prepared(a: int, b: int, count: int, frame: Int16Array) -> list[StreamResampler]:
    """``count`` streams a → b, each fed one frame: prepared for frames of that size."""
    streams = [StreamResampler(a, b) for _ in range(count)]
    for s in streams:
        s.process(frame)
        assert s.prepared(frame.shape[0])
    return streams


def batched_cases(count: int) -> dict[str, dict[str, Callable[[], object]]]:
    """Per direction: one batch call over ``count`` streams, and ``count`` per-stream calls."""
    rng = np.random.default_rng(4)

    def noise(n: int) -> Int16Array:
        return np.clip(rng.standard_normal(n) * 4000, -32768, 32767).astype(np.int16)

    inbound = [ulaw_encode(noise(160)).tobytes() for _ in range(count)]
    outbound = [noise(320) for _ in range(count)]
    up, up2 = (_prepared(8000, 16000, count, noise(160)) for _ in range(2))
    down, down2 = (_prepared(16000, 8000, count, noise(320)) for _ in range(2))
    return {
        f"8k μ-law→16k, B={count}": {
            "batched": lambda: process_ulaw_many(up, b"".join(inbound)),
            "per-stream": lambda: [s.process_ulaw(f) for s, f in zip(up2, inbound, strict=True)],
        },
        f"16k→8k μ-law, B={count}": {
            "batched": lambda: process_to_ulaw_many(down, np.concatenate(outbound)),
            "per-stream": lambda: [
                s.process_to_ulaw(x) for s, x in zip(down2, outbound, strict=True)
            ],
        },
    }


def print_batched(reps: int, n_frames: int) -> None:
    print(
        "\nBatched resampling, per 20 ms frame: one *_many call for B streams vs B calls,"
        " µs per frame (ratio = per-stream / batched)"
    )
    print(f"  {'':<22}{'batched':>12}{'per-stream':>12}{'ratio':>9}")
    for count in BATCH_SIZES:
        for label, cases in batched_cases(count).items():
            t = measure(cases, max(20, n_frames // count), reps)
            # Seconds per call cover `count` frames.
            print(_row(label, [t["batched"], t["per-stream"]], 1e-6 * count, width=12))


def main(argv: list[str] | None = None) -> int:
    """Print the tables; always returns 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="bench codecs", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions (median taken)")
    parser.add_argument("--quick", action="store_true", help="fewer calls per repetition")
    parser.add_argument(
        "--pairs",
        default=",".join(f"{a}:{b}" for a, b in PAIRS),
        help="resampling rate pairs, IN:OUT,... (Hz)",
    )
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    optional = (("audioop", audioop), ("soxr", soxr), ("g711", g711))
    missing = [name for name, module in optional if module is None]
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"soxr {getattr(soxr, '__version__', 'n/a')}, BLAS kernels {blas_core()}; "
        f"medians of {args.reps} reps; ratio = other / ours (>1: ours faster)"
    )
    if missing:
        print(f"not installed, shown as n/a: {', '.join(missing)}")
    print_g711(
        "G.711, 60 s of 8 kHz audio per call (480,000 samples), ms per call",
        480_000,
        max(3, int(20 * scale)),
        args.reps,
        1e-3,
        "ms",
    )
    print_g711(
        "G.711, one 20 ms frame (160 samples), µs per call",
        160,
        max(200, int(20_000 * scale)),
        args.reps,
        1e-6,
        "µs",
    )
    pairs = [(int(p.split(":")[0]), int(p.split(":")[1])) for p in args.pairs.split(",")]
    print_resampling(args.reps, max(200, int(5000 * scale)), pairs)
    print_paths(args.reps, max(200, int(10_000 * scale)))
    print_batched(args.reps, max(200, int(10_000 * scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
