"""The per-call session: provider events <-> bot PCM, paced, with a playout ledger.

Synchronous, no asyncio, no clock: time is passed in (docs/design.md). The server owns
the I/O and the timer; :class:`CallSession` owns the media decisions:

* inbound: decode (μ-law, A-law, L16 LE/BE), reorder by chunk/sequence within a small
  window (gaps filled with counted silence), resample once, 20 ms frames to the bot;
* outbound: any rate and chunking from the bot, resampled once, encoded, cut into whole
  20 ms wire frames, released ``playout_lead`` ahead of their play time;
* ledger: marks/checkpoints every ``mark_interval`` and at each utterance end, echoes
  mapped to what the caller heard (``PlayoutStarted``/``PlayoutStopped``, ``all_played``),
  clock fallback after ``mark_grace`` when a provider does not echo;
* interruption: :meth:`CallSession.clear` drops queued audio and resolves marks as cut;
* resampling: every resampler step goes through a :class:`ResampleBatcher`, which
  converts it at once or, in a server, together with other calls' steps once per loop
  turn (bit-identical audio).

What a session produces goes to its :class:`SessionHost` (bot events, wake-ups).
"""

from __future__ import annotations

from mediastream.session.batch import Conversion, ResampleBatcher
from mediastream.session.session import CallSession, SessionHost
from mediastream.session.stats import SessionStats

__all__ = ["CallSession", "Conversion", "ResampleBatcher", "SessionHost", "SessionStats"]
