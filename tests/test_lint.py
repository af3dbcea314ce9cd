"""Style is part of the suite: ruff over the whole tree, mypy --strict on our packages.

Run by ``make test`` so that CI keeps main clean; ``make lint`` runs the same tools.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_ruff_is_clean() -> None:
    if _run("ruff", "--version").returncode != 0:
        pytest.skip("ruff is not installed (the dev extra brings it)")
    result = _run("ruff", "check", "mediastream", "audiocodecs", "bot", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    if _run("mypy", "--version").returncode != 0:
        pytest.skip("mypy is not installed (the dev extra brings it)")
    # pyproject's [tool.mypy] holds the file list (mediastream, audiocodecs, bot), strict.
    result = _run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"))
    assert result.returncode == 0, result.stdout + result.stderr
