"""Shared test settings.

``MEDIASTREAM_TEST_TIMEOUT_SCALE`` multiplies every timeout the tests wait for (a slow or
loaded machine sets it to 2 or 3); tests read it through :func:`scaled`.
"""

from __future__ import annotations

import os


def timeout_scale() -> float:
    try:
        return max(0.1, float(os.environ.get("MEDIASTREAM_TEST_TIMEOUT_SCALE", "1")))
    except ValueError:
        return 1.0


def scaled(seconds: float) -> float:
    """A timeout in seconds, scaled for the machine the tests run on."""
    return seconds * timeout_scale()
