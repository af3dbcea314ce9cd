"""Property tests of the inbound reorder buffer: any arrival order, duplicates, losses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mediastream.session.reorder import FILL, ReorderBuffer
from mediastream.session.stats import SessionStats


@st.composite
def arrivals(draw: st.DrawFn) -> list[int]:
    """Keys 1..n with some lost, some duplicated, each displaced by up to ``jitter`` slots."""
    n = draw(st.integers(1, 40))  # short enough that no gap exceeds MAX_FILL (no resync)
    lost = draw(st.sets(st.integers(2, n), max_size=n // 3)) if n > 1 else set()
    keys = [k for k in range(1, n + 1) if k not in lost]
    keys += draw(st.lists(st.sampled_from(keys), max_size=5))
    jitter = draw(st.integers(0, 5))
    shifts = draw(st.lists(st.floats(0, jitter), min_size=len(keys), max_size=len(keys)))
    return [k for _, k in sorted(zip(shifts, keys, strict=True), key=lambda p: p[0] + p[1])]


def _run(order: list[int], window: int) -> tuple[list[bytes | None], SessionStats]:
    stats = SessionStats()
    buf = ReorderBuffer(window, 0.02, stats)
    out: list[bytes | None] = []
    for i, key in enumerate(order):
        out += buf.push(key, key.to_bytes(2, "big"), 0.02 * i)
    out += buf.drain()
    return out, stats


@settings(max_examples=300, deadline=None)
@given(arrivals(), st.integers(0, 6))
def test_output_is_in_order_gapless_and_every_arrival_accounted(order: list[int],
                                                                 window: int) -> None:
    out, stats = _run(order, window)
    first = order[0]
    # Slot i of the output is key first+i, or silence standing in for it.
    for i, item in enumerate(out):
        assert item is FILL or int.from_bytes(item, "big") == first + i
    assert out[-1] is not FILL
    assert out.count(FILL) == stats.frames_filled
    # Every arrival is delivered exactly once or counted as dropped (duplicate / too late).
    delivered = len(out) - stats.frames_filled
    assert delivered + stats.frames_late_dropped == len(order)


@settings(max_examples=300, deadline=None)
@given(st.permutations(list(range(1, 11))), st.integers(0, 10))
def test_reordering_within_the_window_restores_the_stream_exactly(order: list[int],
                                                                   window: int) -> None:
    out, stats = _run(order, window)
    # A key is recoverable when fewer than ``window + 1`` later keys overtook it.
    overtaken = [sum(1 for j in order[: order.index(k)] if j > k) for k in range(1, 11)]
    if order[0] == 1 and max(overtaken) <= window:
        assert out == [k.to_bytes(2, "big") for k in range(1, 11)]
        assert stats.frames_filled == stats.frames_late_dropped == 0
    else:  # something was given up: counted, and the late frame dropped
        assert stats.frames_filled > 0 or order[0] != 1
        assert stats.frames_late_dropped > 0
