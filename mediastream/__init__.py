"""mediastream: a pure-asyncio media-stream server for telephony voice bots.

Layers (DESIGN.md §1): :mod:`mediastream.protocols` (sans-I/O provider dialects),
the call session (codec, resampling, pacing, playout ledger), :mod:`mediastream.server`
(the only asyncio I/O), the control plane (answer documents, REST call control,
signatures). Pipecat lives in the separate ``bot`` package.
"""

from __future__ import annotations

__version__ = "0.1.0"
