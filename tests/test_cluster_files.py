"""The workers' shared directory (mediastream/cluster/files.py) on its own: one winner
per spent token across processes, expired tokens swept, a dead worker forgotten."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest

from mediastream.cluster.files import WorkerDirectory, forget_worker


def _claim(state_dir: str, nonce: str, start: float, results: multiprocessing.Queue[bool]
           ) -> None:
    while time.time() < start:  # all processes try at about the same instant
        pass
    directory = WorkerDirectory(state_dir)
    (Path(state_dir) / "tokens").mkdir(parents=True, exist_ok=True)
    results.put(asyncio.run(directory.claim_token(nonce, time.time() + 60)))


def test_one_process_wins_a_token_the_others_race_for(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bool] = context.Queue()
    start = time.time() + 1.0
    processes = [context.Process(target=_claim, args=(str(tmp_path), "ab12" * 4, start, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)
    outcomes = sorted(results.get(timeout=5) for _ in processes)
    assert outcomes == [False, False, False, True]


@pytest.mark.asyncio
async def test_expired_tokens_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    directory = WorkerDirectory(str(tmp_path))
    (tmp_path / "tokens").mkdir()
    assert await directory.claim_token("aaaa", time.time() - 10)  # expired already
    assert await directory.claim_token("bbbb", time.time() + 60)
    assert not await directory.claim_token("bbbb", time.time() + 60)
    assert not await directory.claim_token("../x", time.time() + 60)  # never a path
    directory._claims = 999  # the next claim sweeps
    assert await directory.claim_token("cccc", time.time() + 60)
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["bbbb", "cccc"]


@pytest.mark.asyncio
async def test_calls_are_listed_from_every_worker_and_a_dead_ones_forgotten(
    tmp_path: Path,
) -> None:
    directory = WorkerDirectory(str(tmp_path))
    (tmp_path / "calls" / "4242").mkdir(parents=True)
    (tmp_path / "calls" / "4242" / "x.json").write_text('{"call_id": "CA-other"}')
    (tmp_path / "calls" / str(directory._pid)).mkdir(parents=True)
    directory.call_started({"call_id": "CA/odd id", "instance": directory.instance})
    ids = sorted(row["call_id"] for row in await directory.calls())
    assert ids == ["CA-other", "CA/odd id"]
    forget_worker(str(tmp_path), 4242)
    assert [row["call_id"] for row in await directory.calls()] == ["CA/odd id"]
    directory.call_ended("CA/odd id")
    assert await directory.calls() == []
