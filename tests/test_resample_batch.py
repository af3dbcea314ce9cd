"""Batch resampling: one equal chunk for each of many streams in one call.

``process_many`` and its G.711 forms gather B prepared streams of one rate pair into one
product.  Their contract is exactness against the per-stream methods: row ``i`` of the
result is bit for bit what ``streams[i].process(chunk_i)`` (or the matching fused method)
returns, and each stream's state advances exactly as that call would advance it.  So
every test here runs two identical sets of streams, one through the batch function and
one per stream (the control), and compares outputs and then the flushed tails; the
per-stream path itself is checked against the one-shot reference in test_resample.py
and test_resample_fast.py.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from audiocodecs import SUPPORTED_RATES, StreamResampler, resample
from audiocodecs.resample import (
    process_alaw_many,
    process_many,
    process_to_alaw_many,
    process_to_ulaw_many,
    process_ulaw_many,
)
from tests._util_audio import loud

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]
PAIRS = list(itertools.permutations(SUPPORTED_RATES, 2))
B = 5  # streams per batch in most tests
ROUNDS = 4  # batch calls per test case

Step = Callable[[StreamResampler, Any], npt.NDArray[Any]]
Many = Callable[[Sequence[StreamResampler], Any], npt.NDArray[Any]]
# Per-stream method, batch function, and what they take: int16 "pcm" or G.711 "codes".
FORMS: dict[str, tuple[Step, Many, str]] = {
    "process": (StreamResampler.process, process_many, "pcm"),
    "process_to_ulaw": (StreamResampler.process_to_ulaw, process_to_ulaw_many, "pcm"),
    "process_to_alaw": (StreamResampler.process_to_alaw, process_to_alaw_many, "pcm"),
    "process_ulaw": (StreamResampler.process_ulaw, process_ulaw_many, "codes"),
    "process_alaw": (StreamResampler.process_alaw, process_alaw_many, "codes"),
}
# Every pair with the int16 forms; the G.711-in forms where the input is 8 kHz (the
# telephony side), as the session uses them.
CASES = [
    (pair, form)
    for pair in PAIRS
    for form, (_, _, kind) in FORMS.items()
    if kind == "pcm" or pair[0] == 8000
]


def wrong(value: object) -> Any:
    """Hide an argument of a type the stubs do not list (or a deliberately bad one)."""
    return value


def case_id(case: tuple[tuple[int, int], str]) -> str:
    (a, b), form = case
    return f"{a // 1000}k-{b // 1000}k-{form}"


def codes(n: int, seed: int) -> UInt8Array:
    """Random G.711 codes: every code equally likely, loud ones included."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def chunk(kind: str, n: int, seed: int) -> npt.NDArray[Any]:
    return loud(n, seed) if kind == "pcm" else codes(n, seed)


def streams(pair: tuple[int, int], count: int) -> list[StreamResampler]:
    return [StreamResampler(*pair) for _ in range(count)]


def per_stream(step: Step, group: Sequence[StreamResampler], chunks: Sequence[Any]) -> Any:
    """The control: each stream's own method on its chunk, rows stacked."""
    return np.stack([step(s, c) for s, c in zip(group, chunks, strict=True)])


def assert_same(got: npt.NDArray[Any], expected: npt.NDArray[Any], what: str) -> None:
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    assert np.array_equal(got, expected), what


def expect_error(
    exc: type[Exception],
    match: str,
    what: str,
    many: Many,
    group: Sequence[StreamResampler],
    x: Any,
) -> None:
    """``pytest.raises(exc, match=match)`` around ``many(group, x)``; a failure names the
    case (these run in loops)."""
    try:
        many(group, x)
    except exc as e:
        assert re.search(match, str(e)), f"{what}: {e}"
    else:
        pytest.fail(f"{what}: no {exc.__name__}")


def assert_flushes_equal(
    group: Sequence[StreamResampler], control: Sequence[StreamResampler]
) -> list[Int16Array]:
    """Equal tails after equal outputs: the batch advanced each stream's state exactly."""
    tails = [s.flush() for s in group]
    for i, (tail, c) in enumerate(zip(tails, control, strict=True)):
        assert_same(tail, c.flush(), f"flush of stream {i}")
    return tails


# --- rows equal per-stream calls ---------------------------------------------------------


@pytest.mark.parametrize(("pair", "form"), CASES, ids=[case_id(c) for c in CASES])
def test_batch_rows_equal_per_stream_calls(pair: tuple[int, int], form: str) -> None:
    step, many, kind = FORMS[form]
    a, b = pair
    # 20 ms is a whole number of filter row blocks for every pair (44.1 kHz in: 882 =
    # 2 x 441 inputs, or 6 x 147 for 44.1 -> 24 and 48 kHz), so every stream is prepared
    # for 20 ms chunks from its first chunk on: no pair needs another chunk size.
    n = a // 50
    batched, control = streams(pair, B), streams(pair, B)
    inputs: list[list[npt.NDArray[Any]]] = [[] for _ in range(B)]
    outputs: list[list[npt.NDArray[Any]]] = [[] for _ in range(B)]
    for i in range(B):  # warm up; odd streams get two chunks, so positions differ
        for k in range(1 + i % 2):
            x = chunk(kind, n, seed=a + b + 100 * i + k)
            inputs[i].append(x)
            outputs[i].append(step(batched[i], x))
            assert_same(outputs[i][-1], step(control[i], x), f"warm-up {i}/{k}")
    assert all(s.prepared(n) for s in batched), "not prepared for 20 ms chunks"
    got, expected = [], []
    for r in range(ROUNDS):
        chunks = [chunk(kind, n, seed=1000 * (r + 1) + 10 * i + b) for i in range(B)]
        got.append(many(batched, np.concatenate(chunks)))
        expected.append(per_stream(step, control, chunks))
        assert_same(got[-1], expected[-1], f"{form} {a}->{b} n={n} round {r}")
        for i in range(B):
            inputs[i].append(chunks[i])
            outputs[i].append(got[-1][i])
    # Checked again at the end: a result sharing memory with reused scratch would change.
    for r, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert_same(g, e, f"round {r} result changed by later calls")
    tails = assert_flushes_equal(batched, control)
    if form == "process":
        # The encoding forms get the same signals, so they saturate too.
        rows = np.concatenate(expected)
        assert rows.max() == 32767 and rows.min() == -32768, "saturation not exercised"
        # The whole of each batched stream equals the one-shot reference.
        for i in range(B):
            whole = np.concatenate([*outputs[i], tails[i]])
            assert np.array_equal(whole, resample(np.concatenate(inputs[i]), a, b)), i


def test_empty_batch_is_an_empty_array() -> None:
    for step, many, _ in FORMS.values():
        got = many([], b"")
        assert got.shape == (0, 0)
        assert got.dtype == step(StreamResampler(8000, 16000), b"").dtype


# --- mixing batch and per-stream calls ----------------------------------------------------


def test_batch_and_per_stream_calls_mix_on_one_stream() -> None:
    """process_ulaw, then process_ulaw_many, then process, ...: the forms interleave, the
    stream leaves the prepared path and comes back, and it all equals per-stream calls."""
    pair, n = (8000, 16000), 160
    mixed, control = streams(pair, 3), streams(pair, 3)
    seed = itertools.count(7)

    def per_stream_step(form: str, size: int = n) -> None:
        step, _, kind = FORMS[form]
        for i, (s, c) in enumerate(zip(mixed, control, strict=True)):
            x = chunk(kind, size, next(seed))
            assert_same(step(s, x), step(c, x), f"{form}({size}) on stream {i}")

    def batch_step(form: str) -> None:
        step, many, kind = FORMS[form]
        chunks = [chunk(kind, n, next(seed)) for _ in mixed]
        got = many(mixed, np.concatenate(chunks))
        assert_same(got, per_stream(step, control, chunks), f"{form} batch")

    per_stream_step("process_ulaw")
    batch_step("process_ulaw")
    per_stream_step("process")
    batch_step("process")
    batch_step("process_alaw")
    per_stream_step("process_to_ulaw")
    batch_step("process_to_ulaw")
    per_stream_step("process", 7)  # off the prepared path...
    assert not any(s.prepared(n) for s in mixed)
    per_stream_step("process_alaw", n - 7)  # ...and back on it
    assert all(s.prepared(n) for s in mixed)
    batch_step("process_to_alaw")
    batch_step("process_ulaw")
    per_stream_step("process_to_alaw")
    batch_step("process")
    assert_flushes_equal(mixed, control)
    # A flushed stream starts afresh: not prepared until it has had a chunk.
    with pytest.raises(ValueError, match="prepared"):
        process_ulaw_many(mixed, bytes(3 * n))
    per_stream_step("process_ulaw")
    batch_step("process_ulaw")
    assert_flushes_equal(mixed, control)


# --- input forms --------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["process", "process_to_ulaw", "process_ulaw"])
def test_bytes_flat_and_2d_inputs_are_equal(form: str) -> None:
    step, many, kind = FORMS[form]
    pair, n = (8000, 16000), 160
    batched, control = streams(pair, B), streams(pair, B)
    for i in range(B):
        x = chunk(kind, n, seed=i)
        assert_same(step(batched[i], x), step(control[i], x), "warm-up")

    def forms(rows: npt.NDArray[Any]) -> dict[str, Any]:
        wire = rows.astype("<i2") if kind == "pcm" else rows
        return {
            "bytes": wire.tobytes(),
            "bytearray": bytearray(wire.tobytes()),
            "memoryview": memoryview(wire.tobytes()),
            "1-D": rows.reshape(-1).copy(),
            "2-D": rows.copy(),
            "2-D Fortran order": np.asfortranarray(rows),
            "2-D strided view": np.repeat(rows, 2, axis=1)[:, ::2],
        }

    for r, name in enumerate(forms(np.zeros((B, n), dtype=np.uint8)).keys()):
        rows = np.stack([chunk(kind, n, seed=100 * r + i) for i in range(B)])
        arg = forms(rows)[name]
        before = rows.copy()
        got = many(batched, arg)
        assert_same(got, per_stream(step, control, list(rows)), f"{form} from {name}")
        assert np.array_equal(rows, before) and not np.shares_memory(got, rows), name
    assert_flushes_equal(batched, control)


# --- errors -------------------------------------------------------------------------------


def test_errors_leave_every_stream_unchanged() -> None:
    pair, n = (8000, 16000), 160

    def warmed(p: tuple[int, int], size: int, count: int) -> list[StreamResampler]:
        group = streams(p, count)
        for i, s in enumerate(group):
            s.process(loud(size, seed=i))
        return group

    good, good_control = warmed(pair, n, 4), warmed(pair, n, 4)
    other_pair, other_control = warmed((8000, 24000), n, 1), warmed((8000, 24000), n, 1)
    other_size, other_size_control = warmed(pair, 2 * n, 1), warmed(pair, 2 * n, 1)
    misaligned, misaligned_control = warmed(pair, n, 1), warmed(pair, n, 1)
    for s in (misaligned[0], misaligned_control[0]):
        s.process(loud(n + 3, seed=9))
    assert other_pair[0].prepared(n) and not other_size[0].prepared(n)
    assert not misaligned[0].prepared(n)
    pcm = np.concatenate([loud(n, seed=20 + i) for i in range(5)])
    g711 = codes(5 * n, seed=3)
    # Bad streams go last: nothing may have been done to the good ones before them.
    bad_groups = {
        "fresh stream": [*good, StreamResampler(*pair)],
        "other rate pair": [*good, other_pair[0]],
        "prepared for another size": [*good, other_size[0]],
        "off the prepared path": [*good, misaligned[0]],
    }
    for form, (_, many, kind) in FORMS.items():
        data = pcm if kind == "pcm" else g711
        for what, group in bad_groups.items():
            for arg in (data, data.reshape(5, n)):
                expect_error(ValueError, "prepared", f"{form}: {what}", many, group, arg)
        uneven = data[: 4 * n + 1]
        expect_error(ValueError, "equal chunks", f"{form}: uneven", many, good, uneven)
        expect_error(ValueError, "equal chunks", f"{form}: uneven", many, good, uneven.tobytes())
        half = data[: 4 * (n // 2)]  # splits evenly, into chunks of the wrong size
        expect_error(ValueError, "prepared", f"{form}: chunk size", many, good, half)
        if kind == "pcm":
            odd = data[: 4 * n].tobytes()[:-1]
            expect_error(ValueError, "odd byte count", f"{form}: odd bytes", many, good, odd)
            floats = data[: 4 * n].astype(np.float64)
            expect_error(TypeError, "int16", f"{form}: float64", many, good, floats)
        else:
            ints = data[: 4 * n].astype(np.int16)
            expect_error(TypeError, "uint8", f"{form}: int16 codes", many, good, ints)
    # Every stream, good or bad, continues exactly like its control.
    for s, c in (
        *zip(good, good_control, strict=True),
        (other_pair[0], other_control[0]),
        (misaligned[0], misaligned_control[0]),
    ):
        x = loud(n, seed=77)
        assert_same(s.process(x), c.process(x), "after the errors")
    x = loud(2 * n, seed=78)
    assert_same(other_size[0].process(x), other_size_control[0].process(x), "other size")
    chunks = [loud(n, seed=90 + i) for i in range(4)]
    got = process_many(good, np.concatenate(chunks))
    assert_same(got, per_stream(StreamResampler.process, good_control, chunks), "batch after")
    assert_flushes_equal(good, good_control)


# --- batch sizes --------------------------------------------------------------------------


def test_batches_larger_than_the_initial_scratch_then_smaller() -> None:
    """The scratch starts at 16 streams and doubles: 40 outgrows it, smaller ones reuse it."""
    pair, n = (16000, 8000), 320
    group, control = streams(pair, 40), streams(pair, 40)
    for i in range(40):
        x = loud(n, seed=i)
        assert_same(group[i].process(x), control[i].process(x), "warm-up")
    picks = [
        slice(None),
        slice(3, 8),
        slice(None, None, 2),
        slice(7, 24),
        slice(39, 40),
        slice(None),
        slice(None, None, -1),
    ]
    for r, pick in enumerate(picks):
        sub, sub_control = group[pick], control[pick]
        chunks = [loud(n, seed=1000 * r + i) for i in range(len(sub))]
        form = ("process", "process_to_ulaw", "process_to_alaw")[r % 3]
        step, many, _ = FORMS[form]
        got = many(sub, np.concatenate(chunks))
        assert got.shape[0] == len(sub)
        assert_same(got, per_stream(step, sub_control, chunks), f"{form}, pick {r}")
    assert_flushes_equal(group, control)


# --- threads ------------------------------------------------------------------------------


def test_concurrent_batches_in_two_threads() -> None:
    """Each thread batches its own streams; both use the same rate pair and chunk size, so
    scratch shared between threads would mix their rows."""
    pair, n, rounds, count = (8000, 16000), 160, 200, 6
    forms = ("process_ulaw", "process")
    groups = [streams(pair, count) for _ in forms]
    controls = [streams(pair, count) for _ in forms]
    data = [
        [
            [chunk(FORMS[form][2], n, seed=10_000 * t + 100 * r + i) for i in range(count)]
            for r in range(rounds + 1)
        ]
        for t, form in enumerate(forms)
    ]
    for t, form in enumerate(forms):
        step = FORMS[form][0]
        for s, c, x in zip(groups[t], controls[t], data[t][0], strict=True):
            assert_same(step(s, x), step(c, x), "warm-up")
    results: list[list[npt.NDArray[Any]]] = [[] for _ in forms]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(forms))

    def work(t: int) -> None:
        many = FORMS[forms[t]][1]
        try:
            barrier.wait()
            for r in range(1, rounds + 1):
                results[t].append(many(groups[t], np.concatenate(data[t][r])))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(len(forms))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for t, form in enumerate(forms):
        step = FORMS[form][0]
        assert len(results[t]) == rounds
        for r in range(1, rounds + 1):
            expected = per_stream(step, controls[t], data[t][r])
            assert_same(results[t][r - 1], expected, f"thread {t} ({form}) round {r}")
        assert_flushes_equal(groups[t], controls[t])


def test_a_2d_input_needs_one_row_per_stream() -> None:
    """(4, 200) holds 800 samples, which would split into 5 chunks of 160: refused,
    since its rows are not the streams' chunks; so are 3-D inputs."""
    streams = [StreamResampler(16000, 8000) for _ in range(5)]
    for s in streams:
        s.process(np.zeros(160, dtype=np.int16))
    assert all(s.prepared(160) for s in streams)
    expect_error(ValueError, "shape", "4 rows for 5 streams", process_many, streams,
                 np.zeros((4, 200), dtype=np.int16))
    expect_error(ValueError, "shape", "3-D", process_to_ulaw_many, streams,
                 np.zeros((5, 1, 160), dtype=np.int16))
    codes = [StreamResampler(8000, 16000) for _ in range(2)]
    for s in codes:
        s.process_ulaw(bytes(160))
    expect_error(ValueError, "shape", "codes in 4 rows", process_ulaw_many, codes,
                 np.zeros((4, 80), dtype=np.uint8))
    assert process_many(streams, np.zeros((5, 160), dtype=np.int16)).shape == (5, 80)


def test_the_same_stream_twice_in_one_batch_is_refused() -> None:
    """Two chunks of one stream must run one after the other (the second needs the
    first's history): a batch cannot do that, so it refuses and changes nothing."""
    stream, control = (StreamResampler(8000, 16000) for _ in range(2))
    other = StreamResampler(8000, 16000)
    for s in (stream, control, other):
        s.process_ulaw(bytes(160))
    expect_error(ValueError, "distinct", "a stream twice", process_ulaw_many,
                 [stream, other, stream], bytes(480))
    chunk = codes(160, seed=5)
    assert_same(stream.process_ulaw(chunk), control.process_ulaw(chunk), "after the refusal")
