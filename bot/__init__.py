"""Pipecat bridge and bots: the only package that imports pipecat.

A Pipecat bot is ``async def run_bot(transport, call)``: ``transport`` is a
:class:`bot.transport.MediaStreamTransport` (``input()``, ``output()``, ``sample_rate``,
``info``), ``call`` the call's :class:`~mediastream.protocols.events.CallInfo`. The
server wraps it with :func:`bot.transport.pipecat_runner`.

* :mod:`bot.echo` -- the minimal pipeline (benchmarks);
* :mod:`bot.parrot` -- the offline default: greeting, turn playback, DTMF, goodbye;
* :mod:`bot.voice_agent` -- Deepgram, OpenAI and Cartesia, from their API keys.
"""
