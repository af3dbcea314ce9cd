"""Dependencies point one way: bot -> mediastream -> audiocodecs (DESIGN.md §1).

Imports are read with ``ast`` (including imports inside functions), so a lazy import
cannot sneak past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"mediastream", "audiocodecs", "bot"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_packages_exist() -> None:
    for package in ("mediastream", "audiocodecs", "bot", "mediastream/protocols"):
        assert (ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("path", _files("audiocodecs"), ids=str)
def test_audiocodecs_imports_nothing_of_ours(path: Path) -> None:
    bad = {n for n in _imports(path) if _top(n) in OURS - {"audiocodecs"}}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("audiocodecs"), ids=str)
def test_audiocodecs_is_pure_numpy(path: Path) -> None:
    allowed_third_party = {"numpy"}
    import sys

    bad = {
        n
        for n in _imports(path)
        if _top(n) not in sys.stdlib_module_names
        and _top(n) not in allowed_third_party
        and _top(n) != "audiocodecs"
    }
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("mediastream"), ids=str)
def test_mediastream_never_imports_bot_or_pipecat(path: Path) -> None:
    bad = {n for n in _imports(path) if _top(n) in {"bot", "pipecat"}}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("mediastream/protocols"), ids=str)
def test_protocols_are_sans_io(path: Path) -> None:
    forbidden = {"asyncio", "time", "numpy", "aiohttp", "websockets", "socket", "audiocodecs"}
    bad = {n for n in _imports(path) if _top(n) in forbidden}
    assert not bad, f"{path} imports {bad}"


def _outside_bot() -> list[Path]:
    """Our own Python files outside bot/ (tests and benchmarks may drive Pipecat)."""
    found = []
    for path in ROOT.rglob("*.py"):
        first = path.relative_to(ROOT).parts[0]
        if first in {"bot", "tests", "bench", "build"} or first.startswith("."):
            continue
        found.append(path)
    return sorted(found)


@pytest.mark.parametrize("path", _outside_bot(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_bot_imports_pipecat(path: Path) -> None:
    bad = {n for n in _imports(path) if _top(n) == "pipecat"}
    assert not bad, f"{path} imports {bad}"


def test_outside_bot_covers_the_packages() -> None:
    tops = {p.relative_to(ROOT).parts[0] for p in _outside_bot()}
    assert {"mediastream", "audiocodecs"} <= tops


def test_the_layering_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself must see imports, including ones hidden inside functions."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import bot.transport\n    from pipecat.frames import x\n")
    assert _imports(sample) == {"bot.transport", "pipecat.frames"}


def test_top_level_exports_resolve_and_protocols_stay_light() -> None:
    """``mediastream`` re-exports lazily; the sans-I/O layer never drags in the I/O stack."""
    import subprocess
    import sys

    code = (
        "import sys, mediastream.protocols, audiocodecs\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'websockets', 'pipecat', 'prometheus_client')]\n"
        "assert not heavy, heavy\n"
        "import mediastream\n"
        "assert set(mediastream.__all__) == set(mediastream._EXPORTS)\n"
        "for name in mediastream.__all__:\n"
        "    getattr(mediastream, name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
