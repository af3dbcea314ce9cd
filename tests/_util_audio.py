"""Signals for the resampler tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def loud(n: int, seed: int) -> npt.NDArray[np.int16]:
    """Loud noise with a full-scale square burst: the filter output overshoots int16."""
    rng = np.random.default_rng(seed)
    x = np.clip(np.rint(rng.standard_normal(n) * 14000.0), -32768, 32767).astype(np.int16)
    burst = min(n // 3, 800)
    x[n // 3 : n // 3 + burst] = np.where(np.arange(burst) % 40 < 20, 32767, -32768)
    return x
