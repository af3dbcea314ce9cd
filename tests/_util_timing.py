"""Timeouts for a slow or loaded machine.

``MEDIASTREAM_TEST_TIMEOUT_SCALE`` multiplies every timeout the tests wait for (a slow or
loaded machine sets it to 2 or 3); tests and their helpers read it through :func:`scaled`.
"""

from __future__ import annotations

import os


def scaled(seconds: float) -> float:
    """A timeout in seconds, scaled by MEDIASTREAM_TEST_TIMEOUT_SCALE."""
    try:
        scale = max(0.1, float(os.environ.get("MEDIASTREAM_TEST_TIMEOUT_SCALE", "1")))
    except ValueError:
        scale = 1.0
    return seconds * scale
