"""Pipecat's loguru records reach stdlib logging: our level, our format, the call id."""

from __future__ import annotations

import logging

import pytest
from _util_server import FakeProvider, running_server, ulaw_payload

pytest.importorskip("pipecat")

from bot import echo
from bot.logs import route_pipecat_logs
from bot.transport import pipecat_runner


async def _one_call() -> None:
    async with running_server(pipecat_runner(echo.run_bot)) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            for _ in range(5):
                await fake.send(fake.media(ulaw_payload(1)))
            await fake.wait_audio(160)
            await fake.send(fake.stop())
            await fake.closed()


@pytest.mark.asyncio
async def test_pipecat_logs_follow_the_log_level_and_name_the_call(
        caplog: pytest.LogCaptureFixture) -> None:
    assert route_pipecat_logs(force=True)
    with caplog.at_level(logging.WARNING):
        await _one_call()
    assert not [r for r in caplog.records if r.name.startswith("pipecat")
                and r.levelno < logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        await _one_call()
    pipecat = [r for r in caplog.records if r.name.startswith("pipecat")]
    assert pipecat, "Pipecat logs at DEBUG during a call"
    in_call = [r for r in pipecat if getattr(r, "call_id", "-") != "-"]
    assert in_call, [r.getMessage() for r in pipecat]
    assert all(r.getMessage().startswith(f"[call {r.call_id}] ")  # type: ignore[attr-defined]
               for r in in_call)


@pytest.mark.asyncio
async def test_a_pipeline_at_another_rate_is_told_the_flag(
        caplog: pytest.LogCaptureFixture) -> None:
    from pipecat.workers.runner import WorkerRunner

    async def run_bot_8k(transport: object, call: object) -> None:
        # The Twilio guide's 8 kHz pipeline, on a server delivering 16 kHz.
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(echo.build_worker(transport, 8000))  # type: ignore[arg-type]
        await runner.run()

    with caplog.at_level(logging.WARNING):
        async with running_server(pipecat_runner(run_bot_8k), bot_sample_rate=16000) as server:
            fake = FakeProvider("twilio")
            async with fake.connect(server):
                await fake.open()
                fake.start_pump()
                for _ in range(5):
                    await fake.send(fake.media(ulaw_payload(1)))
                await fake.wait_audio(160)  # the pipeline is up
                await fake.send(fake.stop())
                await fake.closed()
    (warning,) = [r.getMessage() for r in caplog.records
                  if "audio_in_sample_rate=8000" in r.getMessage()]
    assert "but the call delivers 16000 Hz" in warning
    assert "--bot-sample-rate 8000" in warning
