"""StreamResampler's prepared path (equal chunks) and fused G.711 steps.

A stream fed equal chunks that are a whole number of filter rows (20 ms frames, for
every supported pair) switches to views prepared for that chunk size; the fused methods
decode G.711 into the filter input or encode its output to G.711.  Everything here
checks the result against the one-shot reference, the same definition the general path
is tested against in test_resample.py, so both paths must agree sample for sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiocodecs import (
    SUPPORTED_RATES,
    StreamResampler,
    alaw_decode,
    alaw_encode,
    resample,
    ulaw_decode,
    ulaw_encode,
)
from audiocodecs.resample import _ALAW_WIDE, _LOW_WORD, _ROUNDING_MAGIC, _ULAW_WIDE
from tests._util_audio import loud

Int16Array = npt.NDArray[np.int16]
PAIRS = list(itertools.permutations(SUPPORTED_RATES, 2))


def wrong(value: object) -> Any:
    """Hide an argument of a type the stubs do not list (or a deliberately bad one)."""
    return value


def pair_id(pair: tuple[int, int]) -> str:
    return f"{pair[0] // 1000}k-{pair[1] // 1000}k"


def run(r: StreamResampler, x: Int16Array, chunks: list[int]) -> Int16Array:
    """Feed ``x`` in ``chunks`` (the rest in one call at the end), then flush."""
    outs, pos = [], 0
    for size in chunks:
        outs.append(r.process(x[pos : pos + size]))
        pos += size
    outs.append(r.process(x[pos:]))
    outs.append(r.flush())
    return np.concatenate(outs)


def prepared(r: StreamResampler) -> int:
    """Chunk size the stream has prepared views for (-1: none).

    Read from a private attribute on purpose: without it a test of the prepared path
    could silently exercise only the general one.
    """
    return r._fast_n


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_frames_take_the_prepared_path_and_equal_one_shot(pair: tuple[int, int]) -> None:
    a, b = pair
    frame = a // 50
    x = loud(a // 2, seed=a + 3 * b)
    reference = resample(x, a, b)
    assert reference.max() == 32767 and reference.min() == -32768  # saturation exercised
    r = StreamResampler(a, b)
    assert np.array_equal(run(r, x, [frame] * 24), reference)
    r.process(x[:frame])
    r.process(x[:frame])
    assert prepared(r) == frame


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_leaving_and_reentering_the_prepared_path(pair: tuple[int, int]) -> None:
    a, b = pair
    f = a // 50
    x = loud(3 * a, seed=b)
    reference = resample(x, a, b)
    chunkings = [
        [f, f, 7, f, f, f - 7, f, f],  # misaligned, then aligned again by a chunk
        [f, f, 3 * f, 3 * f, f, 2 * f, f],  # several prepared sizes
        [f, f, f // 2 if f % 2 == 0 else f, f, 5 * f, 7 * f, 9 * f, f, f],  # > 4 sizes
        [f, f, 2 * 2048 + 5, f, f],  # a chunk longer than two internal steps
        [1] * 9 + [f] * 5,
        [0, f, 0, f, 0, f],
    ]
    for chunks in chunkings:
        assert np.array_equal(run(StreamResampler(a, b), x, chunks), reference), chunks


@given(
    pair=st.sampled_from(PAIRS),
    picks=st.lists(st.integers(0, 8), max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_random_mixes_of_frame_and_odd_chunks(
    pair: tuple[int, int], picks: list[int], seed: int
) -> None:
    a, b = pair
    f = a // 50
    sizes = [f, f, f, 2 * f, f // 2, 1, 7, 509, 0]
    chunks = [sizes[p] for p in picks]
    x = loud(sum(chunks) + 100, seed=seed)
    assert np.array_equal(run(StreamResampler(a, b), x, chunks), resample(x, a, b))


def test_reset_and_flush_on_the_prepared_path() -> None:
    x = loud(4800, seed=1)
    r = StreamResampler(24000, 8000)
    first = run(r, x, [480] * 10)
    assert np.array_equal(run(r, x, [480] * 10), first)  # flush left a fresh stream
    for i in range(0, 2400, 480):
        r.process(x[i : i + 480])
    r.reset()
    assert np.array_equal(run(r, x, [480] * 10), first)


# --- fused G.711 ----------------------------------------------------------------------

DecodeStep = Callable[[StreamResampler, Any], Int16Array]
EncodeStep = Callable[[StreamResampler, Int16Array], npt.NDArray[np.uint8]]
LAWS: dict[str, tuple[Callable[..., Any], Callable[..., Any], DecodeStep, EncodeStep]] = {
    "ulaw": (
        ulaw_decode,
        ulaw_encode,
        StreamResampler.process_ulaw,
        StreamResampler.process_to_ulaw,
    ),
    "alaw": (
        alaw_decode,
        alaw_encode,
        StreamResampler.process_alaw,
        StreamResampler.process_to_alaw,
    ),
}


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_fused_decode_equals_decode_then_process(law: str, pair: tuple[int, int]) -> None:
    decode, encode, step, _ = LAWS[law]
    a, b = pair
    f = a // 50
    codes: npt.NDArray[np.uint8] = encode(loud(a // 2, seed=a))
    reference = resample(decode(codes), a, b)
    for chunks in ([f] * 30, [f, f, 7, f, f, 3 * f], [509] * 3):
        r = StreamResampler(a, b)
        outs, pos = [], 0
        for k, size in enumerate(chunks):
            part = codes[pos : pos + size]
            # The wire gives bytes; other bytes-likes and arrays are accepted too.
            raw = part.tobytes()
            arg = (raw, part, bytearray(raw), memoryview(raw))[k % 4]
            outs.append(step(r, arg))
            pos += size
        outs.append(r.process(decode(codes[pos:])))  # the forms mix on one stream
        outs.append(r.flush())
        assert np.array_equal(np.concatenate(outs), reference), chunks


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_fused_encode_equals_process_then_encode(law: str, pair: tuple[int, int]) -> None:
    _, encode, _, step = LAWS[law]
    a, b = pair
    f = a // 50
    x = loud(a // 2, seed=b)
    reference = encode(resample(x, a, b))
    for chunks in ([f] * 30, [f, f, 7, f, f, 3 * f], [509] * 3):
        r = StreamResampler(a, b)
        outs, pos = [], 0
        for k, size in enumerate(chunks):
            part = x[pos : pos + size]
            outs.append(step(r, part) if k % 2 else step(r, wrong(part.tobytes())))
            pos += size
        outs.append(encode(r.process(x[pos:])))
        outs.append(encode(r.flush()))
        got = np.concatenate(outs)
        assert got.dtype == np.uint8
        assert np.array_equal(got, reference), chunks


def test_fused_steps_at_equal_rates_are_the_codec() -> None:
    x = loud(480, seed=5)
    codes = ulaw_encode(x)
    r = StreamResampler(8000, 8000)
    assert np.array_equal(r.process_ulaw(codes.tobytes()), ulaw_decode(codes))
    assert np.array_equal(r.process_alaw(codes), alaw_decode(codes))
    assert np.array_equal(r.process_to_ulaw(x), ulaw_encode(x))
    assert np.array_equal(r.process_to_alaw(x.tobytes()), alaw_encode(x))
    assert r.flush().shape == (0,)


def test_rounding_constant_rounds_like_rint() -> None:
    """The fused encoder rounds by adding 1.5 * 2**52; ties must go to even as in rint."""
    y = np.concatenate(
        [
            np.arange(-32768.0, 32768.0, 0.25),  # every tie and quarter in range
            np.random.default_rng(0).uniform(-32768, 32767, 10_000),
            np.nextafter(np.arange(-5.5, 6.0), np.inf),
            np.nextafter(np.arange(-5.5, 6.0), -np.inf),
        ]
    )
    low = (y + _ROUNDING_MAGIC).view(np.int32)[_LOW_WORD]
    assert np.array_equal(low, np.rint(y).astype(np.int32))


@pytest.mark.parametrize(("wide", "encode"), [(_ULAW_WIDE, ulaw_encode), (_ALAW_WIDE, alaw_encode)])
def test_wide_encode_tables_saturate(
    wide: npt.NDArray[np.uint8], encode: Callable[[Int16Array], npt.NDArray[np.uint8]]
) -> None:
    """The fused encoder indexes these with unclipped rounded outputs (up to ±2**17)."""
    v = np.arange(-(2**17), 2**17)
    assert np.array_equal(
        wide.take(v, mode="wrap"), encode(np.clip(v, -32768, 32767).astype(np.int16))
    )


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_fused_encode_without_the_wide_table(pair: tuple[int, int]) -> None:
    """Every supported filter's gain allows the wide table; the clipping branch (for a
    filter that would not) must give the same codes."""
    a, b = pair
    f = a // 50
    x = loud(40 * f, seed=a + 7 * b)
    wide, narrow = StreamResampler(a, b), StreamResampler(a, b)
    assert wide._wide
    narrow._wide = False
    for i in range(0, x.shape[0], f):
        assert np.array_equal(
            wide.process_to_ulaw(x[i : i + f]), narrow.process_to_ulaw(x[i : i + f])
        )


def test_fused_bad_arguments_leave_the_stream_untouched() -> None:
    r = StreamResampler(8000, 16000)
    x = loud(1600, seed=2)
    for i in range(0, 800, 160):  # on the prepared path
        r.process(x[i : i + 160])
    with pytest.raises(TypeError, match="uint8"):
        r.process_ulaw(wrong(np.zeros(160, dtype=np.int16)))
    with pytest.raises(ValueError, match="1-D"):
        r.process_alaw(np.zeros((160, 1), dtype=np.uint8))
    with pytest.raises(TypeError, match="bytes-like"):
        r.process_ulaw(wrong("\xff" * 160))
    with pytest.raises(TypeError, match="int16"):
        r.process_to_ulaw(wrong(np.zeros(160, dtype=np.float64)))
    with pytest.raises(ValueError, match="odd byte count"):
        r.process_to_alaw(b"\x00" * 319)
    rest = [r.process(x[i : i + 160]) for i in range(800, 1600, 160)]
    head = StreamResampler(8000, 16000)
    expected = [head.process(x[i : i + 160]) for i in range(0, 1600, 160)][5:]
    assert all(np.array_equal(g, e) for g, e in zip(rest, expected, strict=True))
