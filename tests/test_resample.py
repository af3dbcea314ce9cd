"""StreamResampler: chunking-exactness, withholding, quality and delay, measured."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocodecs import SUPPORTED_RATES, StreamResampler, resample
from audiocodecs._fir import design

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]

PAIRS = [(a, b) for a, b in itertools.permutations(SUPPORTED_RATES, 2)]
TELEPHONY_PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)]
CHUNK_SIZES = [1, 7, 160, 509, None]  # None: everything at once


def wrong(value: object) -> Any:
    """Hide a deliberately mistyped argument from the type checker."""
    return value


def pair_id(pair: tuple[int, int]) -> str:
    return f"{pair[0] // 1000}k-{pair[1] // 1000}k"


def noise(n: int, seed: int = 0, rms: float = 6000.0) -> Int16Array:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.standard_normal(n) * rms), -32768, 32767).astype(np.int16)


def tone(freq: float, rate: int, n: int, amp: float = 16000.0, phase: float = 0.3) -> Int16Array:
    t = np.arange(n) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def fit_tone(y: Int16Array, freq: float, rate: int) -> tuple[float, float, FloatArray]:
    """Least-squares sinusoid at ``freq`` over the steady middle half of ``y``.

    Returns (amplitude, phase at t=0, residual).  The quarters at both ends hold the
    filter's start-up and the decay after the input ends.
    """
    start = y.shape[0] // 4
    seg = y[start : 3 * y.shape[0] // 4].astype(np.float64)
    t = (start + np.arange(seg.shape[0])) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, seg, rcond=None)
    return float(math.hypot(a, b)), float(math.atan2(b, a)), seg - basis @ np.array([a, b])


def expected_total(n_in: int, a: int, b: int) -> int:
    """round(n_in * b / a) with halves rounded up, in exact integers."""
    return (2 * n_in * b + a) // (2 * a)


def stream(r: StreamResampler, x: Int16Array, chunks: list[int]) -> list[Int16Array]:
    outs, pos = [], 0
    for size in chunks:
        outs.append(r.process(x[pos : pos + size]))
        pos += size
    outs.append(r.process(x[pos:]))
    return outs


# --- streaming == one-shot ------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_streaming_equals_one_shot(pair: tuple[int, int]) -> None:
    a, b = pair
    x = noise(2000 + a // 100, seed=a + b)
    reference = resample(x, a, b)
    assert reference.dtype == np.int16
    assert reference.shape == (expected_total(x.shape[0], a, b),)
    for size in CHUNK_SIZES:
        r = StreamResampler(a, b)
        step = size or x.shape[0]
        outs = [r.process(x[i : i + step]) for i in range(0, x.shape[0], step)]
        outs.append(r.flush())
        assert np.array_equal(np.concatenate(outs), reference), size


@given(
    pair=st.sampled_from(PAIRS),
    n=st.integers(0, 3000),
    chunks=st.lists(st.integers(0, 700), max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_random_chunkings_equal_one_shot(
    pair: tuple[int, int], n: int, chunks: list[int], seed: int
) -> None:
    a, b = pair
    x = noise(n, seed=seed, rms=12000.0)
    r = StreamResampler(a, b)
    outs = stream(r, x, chunks)
    outs.append(r.flush())
    assert np.array_equal(np.concatenate(outs), resample(x, a, b))


@given(
    pair=st.sampled_from(PAIRS),
    chunks=st.lists(st.integers(0, 500), min_size=1, max_size=20),
)
@settings(max_examples=60, deadline=None)
def test_withholding_bound_and_flush_total(pair: tuple[int, int], chunks: list[int]) -> None:
    a, b = pair
    r = StreamResampler(a, b)
    d = r.delay_samples
    assert r.delay == d / b
    x = noise(sum(chunks), seed=len(chunks))
    total = n_in = 0
    for size in chunks:
        total += r.process(x[n_in : n_in + size]).shape[0]
        n_in += size
        # Nothing held back beyond the delay ...
        assert total >= n_in * b / a - r.delay * b - 1
        # ... and exactly the delay, in whole output samples.
        assert total == max(0, -(-n_in * b // a) - d)
    total += r.flush().shape[0]
    assert total == expected_total(n_in, a, b)
    assert abs(total - n_in * b / a) <= 0.5


def test_flush_resets_and_reset_restarts() -> None:
    x = noise(1234, seed=3)
    r = StreamResampler(24000, 8000)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])
    assert np.array_equal(first, second)
    r.process(noise(999, seed=4))
    r.reset()
    assert np.array_equal(np.concatenate([r.process(x), r.flush()]), first)
    assert r.flush().shape == (0,)  # flushing an empty stream yields nothing


def test_bytes_input_equals_array_input() -> None:
    x = noise(480, seed=9)
    assert np.array_equal(
        resample(x.astype("<i2").tobytes(), 24000, 8000), resample(x, 24000, 8000)
    )
    r = StreamResampler(8000, 16000)
    assert np.array_equal(
        r.process(memoryview(x.astype("<i2").tobytes())), StreamResampler(8000, 16000).process(x)
    )


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_identity(rate: int) -> None:
    x = noise(333, seed=rate)
    r = StreamResampler(rate, rate)
    y = r.process(x)
    assert np.array_equal(y, x) and y is not x
    assert r.flush().shape == (0,) and r.delay == 0.0 and r.group_delay_range == (0.0, 0.0)
    assert np.array_equal(resample(x, rate, rate), x)


# --- arithmetic against an independent reference --------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_matches_direct_formula(pair: tuple[int, int]) -> None:
    """The textbook rational resampler, one output at a time, from the prototype.

    Output ``m`` (counted before the held-back delay) is ``sum_i h[p + i*L] x[j - i]``
    with ``j = floor(m*M/L)``, ``p = m*M mod L``: zero-stuff, filter, decimate.
    """
    a, b = pair
    d = design(a, b)
    x = noise(700, seed=11, rms=10000.0)
    n_out = expected_total(x.shape[0], a, b)
    m = np.arange(d.trim, d.trim + n_out)
    newest, phase = (m * d.down) // d.up, (m * d.down) % d.up
    i = np.arange(-(-d.taps.shape[0] // d.up))
    tap_index = phase[:, None] + i[None, :] * d.up
    taps = np.where(
        tap_index < d.taps.shape[0], d.taps[np.minimum(tap_index, d.taps.shape[0] - 1)], 0.0
    )
    x_index = newest[:, None] - i[None, :]
    padded = np.concatenate([x.astype(np.float64), np.zeros(int(newest.max()) + 1)])
    inputs = np.where(x_index >= 0, padded[np.maximum(x_index, 0)], 0.0)
    ref = np.clip(np.rint((taps * inputs).sum(axis=1)), -32768, 32767)
    got = resample(x, a, b).astype(np.float64)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= 1.0  # rint ties may fall either way in float


def test_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave overshoots after a minimum-phase low-pass.
    x = np.where(np.arange(4000) % 40 < 20, 32767, -32768).astype(np.int16)
    for a, b in TELEPHONY_PAIRS:
        y = resample(x, a, b)
        assert y.max() == 32767 and y.min() == -32768
        # No wrap-around: consecutive samples never jump by more than the input can.
        assert np.max(np.abs(np.diff(y.astype(np.int64)))) < 65536 * 0.9


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_dc_gain_is_unity(pair: tuple[int, int]) -> None:
    a, b = pair
    y = resample(np.full(a // 10, 10000, dtype=np.int16), a, b)
    settled = y[y.shape[0] // 4 : y.shape[0] // 2]
    assert np.all(np.abs(settled.astype(np.int64) - 10000) <= 1)


# --- quality, measured ----------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_passband_flat(pair: tuple[int, int]) -> None:
    a, b = pair
    top = 0.85 * min(a, b) / 2  # 3.4 kHz whenever 8 kHz is involved
    gains = []
    for f in np.linspace(50.0, top, 24):
        y = resample(tone(f, a, a // 8), a, b)
        amp, _, _ = fit_tone(y, f, b)
        gains.append(20 * math.log10(amp / 16000.0))
    assert max(gains) <= 0.5 and min(gains) >= -0.5
    assert max(gains) - min(gains) < 0.05  # in fact within a few thousandths of a dB


def band_limited_noise(n: int, rate: int, lo: float, hi: float, seed: int) -> Int16Array:
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spectrum, n)
    x *= 5000.0 / x.std()
    assert np.abs(x).max() < 32000  # no clipping, which would spread energy everywhere
    out: Int16Array = np.rint(x).astype(np.int16)
    return out


def power_db(y: FloatArray | Int16Array) -> float:
    return 10 * math.log10(float(np.mean(np.square(y.astype(np.float64)))) + 1e-30)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] < p[0]], ids=pair_id)
def test_downsampling_rejects_above_new_nyquist(pair: tuple[int, int]) -> None:
    a, b = pair
    # Noise confined to [new Nyquist, old Nyquist): everything in it would alias.
    x = band_limited_noise(a // 2, a, b / 2, a / 2, seed=1)
    y = resample(x, a, b)
    attenuation = power_db(x) - power_db(y[y.shape[0] // 8 : -y.shape[0] // 8])
    assert attenuation >= 70.0
    # Tones, including exactly at the new Nyquist.
    for f in (b / 2, b / 2 + 37.0, (a + b) / 4, 0.499 * a):
        y = resample(tone(f, a, a // 8), a, b)
        level = power_db(y[y.shape[0] // 4 : -y.shape[0] // 4]) - power_db(tone(f, a, a // 8))
        assert level <= -70.0, f


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] > p[0]], ids=pair_id)
def test_upsampling_images_suppressed(pair: tuple[int, int]) -> None:
    a, b = pair
    # White noise fills the whole input band; its images fill [a/2, b/2] of the output.
    x = noise(a // 2, seed=2)
    y = resample(x, a, b)[b // 20 :]
    window = np.hanning(y.shape[0])
    spectrum = np.abs(np.fft.rfft(y * window)) ** 2
    f = np.fft.rfftfreq(y.shape[0], 1 / b)
    image_db = 10 * math.log10(spectrum[f >= a / 2].sum() / spectrum[f < a / 2].sum())
    assert image_db <= -70.0
    # Tones up to the old Nyquist: everything but the tone itself is image (or rounding).
    for f0 in (1000.0, 0.85 * a / 2, 0.97 * a / 2, 0.998 * a / 2):
        y = resample(tone(f0, a, a // 4), a, b)
        _, _, residual = fit_tone(y, f0, b)
        assert power_db(residual) - power_db(tone(f0, a, a // 4)) <= -70.0, f0


def measured_group_delay(a: int, b: int, top: float) -> tuple[FloatArray, FloatArray]:
    """Group delay (s) from the phase of steady-state tones, 50 Hz apart, up to ``top``."""
    r = StreamResampler(a, b)
    freqs = np.arange(100.0, top + 1.0, 50.0)
    phases = []
    for f in freqs:
        y = resample(tone(f, a, a // 8, phase=0.0), a, b)
        _, phase, _ = fit_tone(y, f, b)
        # Output index n is stream time (n + delay_samples) / b.
        phases.append(phase - 2 * np.pi * f * r.delay_samples / b)
    theta = np.unwrap(np.array(phases))
    delay = -np.gradient(theta, 2 * np.pi * freqs)
    return freqs, delay


@pytest.mark.parametrize("pair", TELEPHONY_PAIRS, ids=pair_id)
def test_group_delay_low(pair: tuple[int, int]) -> None:
    a, b = pair
    _, delay = measured_group_delay(a, b, 3400.0)
    assert delay.max() <= 1.5e-3  # spec: ≤ 1.5 ms over the whole 0-3.4 kHz passband
    assert delay.min() >= 0.0  # causal
    r = StreamResampler(a, b)
    lo, hi = r.group_delay_range
    assert lo - 2e-5 <= delay.min() and delay.max() <= hi + 2e-5
    # `delay` is the passband mean group delay, rounded to an output sample.
    assert abs(r.delay - delay.mean()) <= 0.5 / b + 2e-5
    assert delay.min() <= r.delay <= delay.max()


# --- arguments ------------------------------------------------------------------------


def test_rates_given_as_other_numbers() -> None:
    r = StreamResampler(np.int64(8000), 16000.0)  # type: ignore[arg-type]
    assert (r.in_rate, r.out_rate) == (8000, 16000)
    assert type(r.in_rate) is int and type(r.out_rate) is int



def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unsupported in_rate 11025"):
        StreamResampler(11025, 8000)
    with pytest.raises(ValueError, match="unsupported out_rate 0"):
        StreamResampler(8000, 0)
    with pytest.raises(TypeError, match="in_rate must be an int"):
        StreamResampler("8000", 16000)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_rate must be an int"):
        StreamResampler(8000, True)
    r = StreamResampler(8000, 16000)
    with pytest.raises(TypeError, match="int16"):
        r.process(wrong(np.zeros(160, dtype=np.float32)))
    with pytest.raises(TypeError, match="int16"):
        r.process(wrong(np.zeros(160, dtype=np.int32)))
    with pytest.raises(ValueError, match="1-D"):
        r.process(np.zeros((160, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="odd byte count"):
        r.process(b"\x00\x01\x02")
    with pytest.raises(TypeError, match="list"):
        r.process([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported"):
        resample(np.zeros(4, np.int16), 8000, 22050)
    # A failed call leaves the stream untouched.
    x = noise(500, seed=8)
    assert np.array_equal(np.concatenate([r.process(x), r.flush()]), resample(x, 8000, 16000))
