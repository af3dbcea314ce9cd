"""Bots by name: the SPEC loader and the registry that picks a bot for each call.

A bot SPEC names an async function:

* ``echo`` -- the built-in echo bot (:mod:`mediastream.echo`, no Pipecat);
* ``package.module`` -- its ``run_bot`` (else ``bot``) function;
* ``package.module:function``;
* ``path/to/file.py`` or ``path/to/file.py:function`` -- loaded from a file.

A one-argument coroutine function ``async def bot(call: Call)`` is a plain
:data:`~mediastream.call.BotRunner`. A two-argument ``async def run_bot(transport, call)``
is a Pipecat bot: it is wrapped by ``bot.transport:pipecat_runner``, imported by name
through :mod:`importlib` so that mediastream never imports the ``bot`` package (or
Pipecat) statically (docs/design.md §1; ``tests/test_layering.py`` parses static imports).

:class:`AgentRegistry` holds a default bot and named agents. A call names its agent by
the media path (``/ws/<provider>/<agent>``), by an ``agent`` custom parameter, or by
Pipecat Cloud's ``_pipecatCloudServiceHost``/``serviceHost`` (``agent.org``); the
protocol layer puts the latter two in :attr:`CallInfo.agent`. A call that names an
agent the registry does not hold is rejected (:class:`UnknownAgentError`, close 1008):
silently running the default bot instead would put the caller through to the wrong bot.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .call import BotRunner
from .config import Config
from .errors import MediaStreamError, Outcome
from .protocols.events import CallInfo

__all__ = [
    "DEFAULT_BOT",
    "AgentRegistry",
    "BotLoadError",
    "UnknownAgentError",
    "as_bot_runner",
    "listen_only_names",
    "load_bot",
    "parse_agent_option",
    "registry_from_config",
    "share_listen_only",
]

#: The bot ``mediastream serve`` runs when none is given (written with Pipecat).
DEFAULT_BOT = "bot.parrot"
#: Module holding the adapter that turns ``run_bot(transport, call)`` into a BotRunner.
PIPECAT_ADAPTER = "bot.transport:pipecat_runner"
#: Function names looked up when a SPEC names only a module or a file.
_DEFAULT_FUNCTIONS = ("run_bot", "bot")
_BUILTINS = {"echo": "mediastream.echo:echo_bot"}


class BotLoadError(ValueError):
    """A bot SPEC could not be loaded; the message says what to do about it."""


class UnknownAgentError(MediaStreamError):
    """The call named an agent this server does not run (close 1008, policy)."""

    close_code = 1008
    outcome = Outcome.UNKNOWN_AGENT
    public_reason = None


def load_bot(spec: str) -> BotRunner:
    """Load the bot named by ``spec`` (see the module docstring) as a BotRunner.

    Raises :class:`BotLoadError` with an actionable message: missing module or file,
    missing function, a function that is not ``async``, or a Pipecat bot when the
    ``[bot]`` extra is not installed.
    """
    spec = spec.strip()
    if not spec:
        raise BotLoadError("empty bot SPEC")
    target = _BUILTINS.get(spec, spec)
    function = _resolve(target, spec)
    return _as_runner(function, spec)


def _on_path(folder: str) -> None:
    """Put ``folder`` first on ``sys.path`` unless it is there: Python does so for the
    script's folder (``python file.py``) and the working directory (``python -m``), but
    not for the folder of a bot file, nor for the working directory under the
    ``mediastream`` console script."""
    if folder not in sys.path and not (folder == os.getcwd() and "" in sys.path):
        sys.path.insert(0, folder)


def _resolve(target: str, spec: str) -> Callable[..., Any]:
    location, _, attr = _split_spec(target)
    if location.endswith(".py") or "/" in location or "\\" in location:
        module = _import_file(Path(location), spec)
    else:
        module = _import_module(location, spec)
    names = (attr,) if attr else _DEFAULT_FUNCTIONS
    for name in names:
        function = getattr(module, name, None)
        if function is not None:
            if not callable(function):
                raise BotLoadError(f"bot {spec!r}: {name} is not callable")
            return function  # type: ignore[no-any-return]
    wanted = attr or " or ".join(_DEFAULT_FUNCTIONS)
    where = getattr(module, "__mediastream_file__", None) or module.__name__
    raise BotLoadError(f"bot {spec!r}: {where} has no function {wanted}")


def _split_spec(target: str) -> tuple[str, str, str]:
    # "C:\\bots\\x.py:run" has a drive colon; only a colon after the last path separator
    # can separate the function name.
    head, sep, tail = target.rpartition(":")
    if sep and tail and "/" not in tail and "\\" not in tail and tail.isidentifier():
        return head, sep, tail
    return target, "", ""


def _import_module(name: str, spec: str) -> Any:
    _on_path(os.getcwd())
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        raise BotLoadError(f"bot {spec!r}: {_syntax(exc)}") from exc
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        if name == DEFAULT_BOT.split(":")[0] or missing in {"bot", "pipecat"}:
            raise BotLoadError(
                f"bot {spec!r} needs the Pipecat bots (missing module {missing!r}): "
                "install the [bot] extra (pip install 'mediastream[bot]') "
                "or run the built-in echo bot with --bot echo"
            ) from exc
        raise BotLoadError(f"bot {spec!r}: no module named {missing!r}") from exc
    except Exception as exc:
        raise BotLoadError(f"bot {spec!r}: importing {name} failed: {_raised(exc)}") from exc


def _syntax(exc: SyntaxError) -> str:
    return f"syntax error in {exc.filename or '?'} line {exc.lineno or '?'}: {exc.msg}"


def _raised(exc: BaseException) -> str:
    """``Type: message (file line N)`` of the innermost frame of the bot's own code."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename]
    if ours:
        where = f" ({ours[-1].filename} line {ours[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def _import_file(path: Path, spec: str) -> Any:
    if not path.is_file():
        raise BotLoadError(f"bot {spec!r}: no such file {str(path)!r}")
    module_name = "_mediastream_bot_" + "".join(c if c.isalnum() else "_" for c in str(path))
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise BotLoadError(f"bot {spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before exec so dataclasses and pickling inside the file can find it.
    sys.modules[module_name] = module
    # Modules beside the file import as they would if it ran as a script.
    _on_path(str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise BotLoadError(f"bot {spec!r}: {_syntax(exc)}") from exc
    except ModuleNotFoundError as exc:
        del sys.modules[module_name]
        if exc.name in {"bot", "pipecat"}:
            raise BotLoadError(
                f"bot {spec!r} imports {exc.name!r}: install the [bot] extra "
                "(pip install 'mediastream[bot]') or pass --bot echo"
            ) from exc
        raise BotLoadError(f"bot {spec!r}: {exc}") from exc
    except Exception as exc:
        del sys.modules[module_name]
        raise BotLoadError(f"bot {spec!r}: loading {path} failed: {_raised(exc)}") from exc
    except BaseException:
        del sys.modules[module_name]
        raise
    setattr(module, "__mediastream_file__", str(path))  # noqa: B010 - for error messages
    return module


def _positional_arity(function: Callable[..., Any]) -> int:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(
        1
        for p in signature.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    )


def _is_async(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - async __call__ objects
    return call is not None and inspect.iscoroutinefunction(call)


def _as_runner(function: Callable[..., Any], spec: str) -> BotRunner:
    if not _is_async(function):
        raise BotLoadError(
            f"bot {spec!r}: {getattr(function, '__name__', function)!r} must be an "
            "async function (async def bot(call) or async def run_bot(transport, call))"
        )
    arity = _positional_arity(function)
    if arity == 1:
        return function
    if arity == 2:
        return _pipecat_adapter(spec)(function)
    raise BotLoadError(
        f"bot {spec!r}: expected one argument (call) or two (transport, call), "
        f"got {arity} required positional arguments"
    )


def as_bot_runner(bot: Any, what: str = "bot") -> BotRunner:
    """``bot`` as a :data:`~mediastream.call.BotRunner`: a Pipecat
    ``async def run_bot(transport, call)`` is wrapped as ``mediastream serve`` wraps it
    (``bot.transport.pipecat_runner``); anything else is returned as it is.

    So ``MediaStreamServer(bot=run_bot)`` runs a Pipecat bot instead of failing every
    call with 1011; :class:`BotLoadError` when it needs the ``[bot]`` extra.
    """
    if not callable(bot):
        raise TypeError(f"{what}: expected an async function of the call, got {bot!r}")
    if _is_async(bot) and _positional_arity(bot) == 2:
        return _pipecat_adapter(what)(bot)
    return bot  # type: ignore[no-any-return]


def _pipecat_adapter(spec: str) -> Callable[[Callable[..., Any]], BotRunner]:
    module_name, _, attr = PIPECAT_ADAPTER.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BotLoadError(
            f"bot {spec!r} is a Pipecat bot (run_bot(transport, call)) but {exc.name!r} "
            "is not installed: install the [bot] extra (pip install 'mediastream[bot]')"
        ) from exc
    adapter = getattr(module, attr, None)
    if adapter is None:
        raise BotLoadError(f"bot {spec!r}: {module_name} has no {attr}")
    return adapter  # type: ignore[no-any-return]


def parse_agent_option(text: str) -> tuple[str, str]:
    """Split a ``NAME=SPEC`` command-line value; raises ``ValueError`` if malformed."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ValueError(f"expected NAME=SPEC, got {text!r}")
    if not _valid_agent_name(name):
        raise ValueError(f"agent name {name!r}: use letters, digits, '-' and '_'")
    return name, spec


def _valid_agent_name(name: str) -> bool:
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in "-_" for c in name)


class AgentRegistry:
    """A default bot plus named agents; :meth:`resolve` picks the bot for a call.

    ``listen_only`` names agents that only listen: their answer documents fork the call's
    audio to them (``<Start><Stream track="both_tracks">`` and the like) while the call
    goes on to a ``<Dial>`` or another document, and their calls refuse bot audio.
    """

    __slots__ = ("_agents", "default", "listen_only")

    def __init__(
        self,
        default: BotRunner | None = None,
        agents: Mapping[str, BotRunner] | Iterable[tuple[str, BotRunner]] = (),
        listen_only: Iterable[str] = (),
    ) -> None:
        self.default: BotRunner | None = (
            None if default is None else as_bot_runner(default, "the default bot"))
        self._agents: dict[str, BotRunner] = {}
        items = agents.items() if isinstance(agents, Mapping) else agents
        for name, runner in items:
            self.add(name, runner)
        self.listen_only: frozenset[str] = frozenset(listen_only)
        unknown = self.listen_only - set(self._agents)
        if unknown:
            raise ValueError(
                f"listen-only agents {', '.join(sorted(unknown))} are not agents "
                "(name each with --agent NAME=SPEC too)"
            )

    @classmethod
    def from_specs(
        cls, default: str | None, agents: Mapping[str, str] | Iterable[tuple[str, str]] = ()
    ) -> AgentRegistry:
        """Load every SPEC now, so a typo fails at start-up rather than on a call."""
        items = agents.items() if isinstance(agents, Mapping) else agents
        return cls(
            load_bot(default) if default else None,
            [(name, load_bot(spec)) for name, spec in items],
        )

    @classmethod
    def of(cls, bot: BotRunner | AgentRegistry) -> AgentRegistry:
        """``bot`` itself if it is a registry, else a registry with ``bot`` as default."""
        return bot if isinstance(bot, AgentRegistry) else cls(bot)

    def add(self, name: str, runner: BotRunner) -> None:
        """Register ``runner`` under ``name`` (letters, digits, ``-``, ``_``)."""
        if not _valid_agent_name(name):
            raise ValueError(f"agent name {name!r}: use letters, digits, '-' and '_'")
        self._agents[name] = as_bot_runner(runner, f"agent {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The named agents, sorted."""
        return tuple(sorted(self._agents))

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def resolve(self, call: CallInfo, path_agent: str | None = None) -> BotRunner:
        """The bot for ``call``: the path's agent, else ``call.agent``, else the default.

        Raises :class:`UnknownAgentError` when a named agent is not registered, or when
        nothing is named and there is no default bot.
        """
        name = self._name(call, path_agent)
        if name is not None:
            runner = self._agents.get(name)
            if runner is None:
                raise UnknownAgentError(f"unknown agent {_printable(name)}")
            return runner
        if self.default is None:
            raise UnknownAgentError("no agent named and no default bot")
        return self.default


    def is_listen_only(self, call: CallInfo, path_agent: str | None = None) -> bool:
        """Whether the agent :meth:`resolve` picks for ``call`` only listens."""
        return self._name(call, path_agent) in self.listen_only

    @staticmethod
    def _name(call: CallInfo, path_agent: str | None) -> str | None:
        return path_agent or call.agent or call.custom_parameters.get("agent") or None


def _printable(name: str) -> str:
    # The name goes into a WebSocket close reason (at most 123 bytes, RFC 6455 §5.5)
    # and into logs: keep it short and free of control characters.
    cleaned = "".join(c if c.isprintable() else "?" for c in name)
    return cleaned[:64]


def registry_from_config(config: Config) -> AgentRegistry:
    """Load ``config.bot`` and ``config.agents`` (``NAME=SPEC,...``) into a registry."""
    agents = [
        parse_agent_option(item) for item in config.agents.split(",") if item.strip()
    ]
    return AgentRegistry(
        load_bot(config.bot) if config.bot else None,
        [(name, load_bot(spec)) for name, spec in agents],
        listen_only_names(config),
    )


def listen_only_names(config: Config) -> frozenset[str]:
    """``config.listen_only_agents`` (comma-separated names) as a set."""
    return config.listen_only_names


def share_listen_only(config: Config, registry: AgentRegistry) -> Config:
    """One answer to "does this agent only listen?" for a server's answer documents
    (read from the config) and its calls (from the registry): both get the union of
    their names. Returns the config to use; the registry is updated in place."""
    names = registry.listen_only | config.listen_only_names
    registry.listen_only = frozenset(names)
    if names == config.listen_only_names:
        return config
    return config.with_overrides(listen_only_agents=",".join(sorted(names)))
