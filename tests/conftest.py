"""Shared test settings.

``MEDIASTREAM_TEST_TIMEOUT_SCALE`` multiplies every timeout the tests wait for (a slow or
loaded machine sets it to 2 or 3); tests read it through ``_util_timing.scaled``, which
every ``_util_*`` helper module re-exports.
"""

from collections.abc import Iterator

import pytest

from tests import _util_session


@pytest.fixture(params=_util_session.MODES)
def batching(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test once per resampling mode of ``RecordedSession`` (at once, batched)."""
    _util_session.mode[0] = request.param
    yield request.param
    _util_session.mode[0] = "at_once"
