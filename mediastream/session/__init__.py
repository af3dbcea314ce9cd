"""The per-call session: provider events <-> bot PCM, paced, with a playout ledger.

Synchronous, no asyncio, no clock: time is passed in (DESIGN.md §1). The server owns the
I/O and the timer; :class:`CallSession` owns the media decisions:

* inbound: decode (μ-law, A-law, L16 LE/BE), reorder by chunk/sequence within a small
  window (gaps filled with counted silence), resample once, 20 ms frames to the bot;
* outbound: any rate and chunking from the bot, resampled once, encoded, cut into whole
  20 ms wire frames, released ``playout_lead`` ahead of their play time;
* ledger: marks/checkpoints every ``mark_interval`` and at each utterance end, echoes
  mapped to what the caller heard (``PlayoutStarted``/``PlayoutStopped``, ``all_played``),
  clock fallback after ``mark_grace`` when a provider does not echo;
* interruption: :meth:`CallSession.clear` drops queued audio and resolves marks as cut.

API notes beyond the original brief (additions only, nothing renamed):
``CallSession.end(reason, now)`` (socket closed / hang-up: flush and CallEnded),
``ended``, ``queued_s`` and ``bot_sample_rate`` properties, and the keyword arguments
``mark_grace`` (default 1.0 s) and ``idle_flush`` (default 0.1 s). ``clear()`` returns
only ``[ClearAudio()]``; the interrupted utterance's ``PlayoutStopped`` comes out of the
next ``poll()`` or ``receive_event()`` (``next_deadline()`` is then ``<= now``).
For drivers that batch many calls' resampling: ``attach_batcher(settle)``,
``defer_audio``/``receive_converted``, ``defer_send``/``send_converted`` and the
:data:`BatchStep` they hand out (see :meth:`CallSession.attach_batcher`).
"""

from __future__ import annotations

from mediastream.session.session import BatchStep, CallSession
from mediastream.session.stats import SessionStats

__all__ = ["BatchStep", "CallSession", "SessionStats"]
