"""Dependencies point one way: bot -> mediastream -> audiocodecs (docs/design.md §1).

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


# --------------------------------------------------------------------------- module graph


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` names (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports -- type-only imports included:
    a circle through ``if TYPE_CHECKING`` is still two modules that know each other."""
    paths = {_module_name(p): p for pkg in ("mediastream", "audiocodecs", "bot")
             for p in _files(pkg)}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # ``from package import module`` imports the module, not only __init__.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                           for a in node.names]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere() -> None:
    """No two modules of ours import each other, directly or around a circle (a module
    importing its own package's ``__init__``, which imports it, counts too)."""
    assert _cycles(_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_import_graph_sees_relative_and_type_only_imports() -> None:
    graph = _graph()
    assert "mediastream.server.host" in graph["mediastream.server.connection"]  # relative
    assert "mediastream.session.stats" in graph["mediastream.server.log"]  # TYPE_CHECKING


@pytest.mark.parametrize("path", _files("mediastream/server"), ids=str)
def test_the_server_layer_imports_no_numpy(path: Path) -> None:
    """Resampling, batched or not, is the session's: the server does I/O only."""
    bad = {n for n in _imports(path) if _top(n) == "numpy"}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _files("mediastream/server"), ids=str)
def test_no_server_module_grows_past_one_sitting(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 420, f"{path}: {lines} lines; split it by concern"
