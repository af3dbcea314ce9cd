"""Shared test settings.

``MEDIASTREAM_TEST_TIMEOUT_SCALE`` multiplies every timeout the tests wait for (a slow or
loaded machine sets it to 2 or 3); tests read it through ``_util_timing.scaled``, which
every ``_util_*`` helper module re-exports.
"""
