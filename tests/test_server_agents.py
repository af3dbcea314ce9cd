"""Bot SPECs and agent routing: by path, by custom parameter, by Pipecat's serviceHost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _util_server import FakeProvider, RecordingBot, running_server, ulaw_payload

from mediastream.agents import (
    AgentRegistry,
    BotLoadError,
    UnknownAgentError,
    load_bot,
    parse_agent_option,
)
from mediastream.echo import echo_bot
from mediastream.protocols.events import PCMU_8K, CallInfo


def _info(**changes: object) -> CallInfo:
    values: dict[str, object] = {
        "provider": "twilio",
        "call_id": "CA1",
        "stream_id": "MZ1",
        "inbound_format": PCMU_8K,
        "outbound_format": PCMU_8K,
    }
    values.update(changes)
    return CallInfo(**values)  # type: ignore[arg-type]


def test_echo_spec_is_the_builtin_echo_bot() -> None:
    assert load_bot("echo") is echo_bot
    assert load_bot("mediastream.echo:echo_bot") is echo_bot
    with pytest.raises(BotLoadError, match="no function run_bot or bot"):
        load_bot("mediastream.echo")  # a module SPEC means its run_bot (else bot)


def test_module_without_a_default_function_is_a_clear_error() -> None:
    with pytest.raises(BotLoadError, match="run_bot or bot"):
        load_bot("json")


def test_file_specs(tmp_path: Path) -> None:
    path = tmp_path / "mybot.py"
    path.write_text(
        "async def bot(call):\n    pass\n\n"
        "async def other(call):\n    pass\n\n"
        "def sync_one(call):\n    pass\n\n"
        "async def three(a, b, c):\n    pass\n"
    )
    assert load_bot(str(path)).__name__ == "bot"
    assert load_bot(f"{path}:other").__name__ == "other"
    with pytest.raises(BotLoadError, match="async"):
        load_bot(f"{path}:sync_one")
    with pytest.raises(BotLoadError, match="3 required"):
        load_bot(f"{path}:three")
    with pytest.raises(BotLoadError, match="no function"):
        load_bot(f"{path}:missing")
    with pytest.raises(BotLoadError, match="no such file"):
        load_bot(str(tmp_path / "nope.py"))


def test_missing_module_is_a_clear_error() -> None:
    with pytest.raises(BotLoadError, match="no module named 'surely_not_a_module'"):
        load_bot("surely_not_a_module:run")


def test_two_argument_bot_is_wrapped_by_the_pipecat_adapter(tmp_path: Path) -> None:
    path = tmp_path / "pipecat_bot.py"
    path.write_text("async def run_bot(transport, call):\n    pass\n")
    runner = load_bot(str(path))
    assert runner.__qualname__ == "pipecat_runner(run_bot)"


def test_default_bot_loads_or_says_how_to_get_it() -> None:
    try:
        runner = load_bot("bot.parrot")
    except BotLoadError as exc:  # pragma: no cover - only without the [bot] extra
        assert "[bot]" in str(exc) and "--bot echo" in str(exc)
    else:
        assert callable(runner)


def test_missing_pipecat_says_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a machine without the [bot] extra: importing "bot.parrot" fails.
    monkeypatch.setitem(sys.modules, "bot.parrot", None)
    with pytest.raises(BotLoadError, match=r"\[bot\] extra.*--bot echo"):
        load_bot("bot.parrot")


def test_parse_agent_option() -> None:
    assert parse_agent_option("sales=bots.sales:run") == ("sales", "bots.sales:run")
    assert parse_agent_option(" a = b.py ") == ("a", "b.py")
    for bad in ("sales", "=x", "x=", "bad name=x"):
        with pytest.raises(ValueError):
            parse_agent_option(bad)


def test_registry_resolution_order() -> None:
    default, sales, support = RecordingBot(), RecordingBot(), RecordingBot()
    registry = AgentRegistry(default, {"sales": sales, "support": support})
    assert registry.resolve(_info()) is default
    assert registry.resolve(_info(), "sales") is sales
    assert registry.resolve(_info(agent="support")) is support
    assert registry.resolve(_info(custom_parameters={"agent": "sales"})) is sales
    # The path wins over parameters.
    assert registry.resolve(_info(agent="support"), "sales") is sales
    with pytest.raises(UnknownAgentError, match="unknown agent nope"):
        registry.resolve(_info(agent="nope"))
    with pytest.raises(UnknownAgentError, match="no default"):
        AgentRegistry(None, {"sales": sales}).resolve(_info())
    assert registry.names == ("sales", "support")
    assert "sales" in registry and "nope" not in registry


def test_unknown_agent_reason_is_printable_and_short() -> None:
    registry = AgentRegistry(echo_bot)
    with pytest.raises(UnknownAgentError) as caught:
        registry.resolve(_info(agent="x\x00" * 100))
    assert "\x00" not in str(caught.value)
    assert len(str(caught.value).encode()) <= 123


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("provider", "path_agent", "params", "expected"),
    [
        ("twilio", "sales", {}, "sales"),
        ("telnyx", None, {"agent": "support"}, "support"),
        ("twilio", None, {"_pipecatCloudServiceHost": "support.acme"}, "support"),
        ("plivo", None, {}, "default"),
    ],
)
async def test_calls_reach_the_agent_they_name(
    provider: str, path_agent: str | None, params: dict[str, str], expected: str
) -> None:
    bots = {"default": RecordingBot(), "sales": RecordingBot(), "support": RecordingBot()}
    registry = AgentRegistry(bots["default"], {"sales": bots["sales"], "support": bots["support"]})
    async with running_server(registry) as server:
        fake = FakeProvider(provider, params=params)
        async with fake.connect(server, fake.path(path_agent)):
            await fake.open()
            await bots[expected].started.wait()
            await fake.send(fake.stop())
            assert (await fake.closed())[0] == 1000
    assert [name for name, bot in bots.items() if bot.calls] == [expected]


def test_a_bot_file_imports_the_modules_beside_it(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "greetings_beside.py").write_text("HELLO = 'hi'\n")
    path = tmp_path / "mybot_beside.py"
    path.write_text("from greetings_beside import HELLO\n\nasync def bot(call):\n    pass\n")
    assert load_bot(str(path)).__name__ == "bot"


def test_a_module_spec_is_found_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The `mediastream` console script, unlike `python -m`, has no working directory on
    # sys.path: the README's --agent support=mybots.support must work with both.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mybots_cwd").mkdir()
    (tmp_path / "mybots_cwd" / "support.py").write_text("async def run_bot(call):\n    pass\n")
    assert load_bot("mybots_cwd.support").__name__ == "run_bot"


def test_load_errors_name_the_file_and_line_or_function(tmp_path: Path) -> None:
    broken = tmp_path / "broken_bot.py"
    broken.write_text("async def bot(call):\n    return (\n")
    with pytest.raises(BotLoadError, match=r"syntax error in .*broken_bot\.py line 2") as e:
        load_bot(str(broken))
    assert "\n" not in str(e.value)
    raising = tmp_path / "raising_bot.py"
    raising.write_text("import os\nraise RuntimeError('no config')\n")
    with pytest.raises(BotLoadError,
                       match=r"RuntimeError: no config \(.*raising_bot\.py line 2\)"):
        load_bot(str(raising))
    empty = tmp_path / "empty_bot.py"
    empty.write_text("X = 1\n")
    with pytest.raises(BotLoadError, match=r"empty_bot\.py has no function run_bot or bot"):
        load_bot(str(empty))
    (tmp_path / "broken_pkg_bot.py").write_text("def (:\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(BotLoadError, match=r"syntax error in .*broken_pkg_bot\.py line 1"):
            load_bot("broken_pkg_bot")
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.asyncio
async def test_a_pipecat_bot_given_to_the_server_directly_is_wrapped() -> None:
    pytest.importorskip("pipecat")
    from bot import echo

    registry = AgentRegistry.of(echo.run_bot)  # as MediaStreamServer(bot=run_bot) does
    assert registry.default is not None
    assert registry.default.__qualname__ == "pipecat_runner(run_bot)"
    async with running_server(echo.run_bot) as server:
        fake = FakeProvider("twilio")
        async with fake.connect(server):
            await fake.open()
            fake.start_pump()
            for _ in range(10):
                await fake.send(fake.media(ulaw_payload(1)))
            # The echo came back: the two-argument bot ran as a Pipecat bot (it used to
            # be called with the call alone and fail with 1011).
            assert len(await fake.wait_audio(160)) >= 160
            await fake.send(fake.stop())
            code, _ = await fake.closed()
    assert code == 1000
