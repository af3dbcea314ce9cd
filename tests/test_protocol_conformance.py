"""Every provider against its documented message vectors, through one test body.

The vectors (``tests/vectors/<provider>/``) hold the providers' documented examples and
the events/wire messages we expect for them, written by hand; see ``_util_protocols``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _util_protocols import (
    case_message,
    command,
    event_json,
    load,
    new_protocol,
    to_wire,
    vector_files,
)

from mediastream import errors
from mediastream.protocols import ClearAudio, State, StreamStopped

#: docs/design.md §3: the close code each error must carry.
CLOSE_CODES = {
    "OutOfOrderError": 1002,
    "UnsupportedDataError": 1003,
    "InvalidMessageError": 1007,
    "MessageTooBigError": 1009,
}


def _id(param: object) -> str:
    return param.stem if isinstance(param, Path) else str(param)


@pytest.mark.parametrize(
    ("provider", "path"),
    [p for p in vector_files() if load(p[1])["kind"] in {"session", "outbound"}],
    ids=_id,
)
def test_documented_messages(provider: str, path: Path) -> None:
    vector = load(path)
    assert vector["_source"], "every vector names its source"
    protocol = new_protocol(provider, vector)
    assert protocol.provider == provider
    assert protocol.state is State.IDLE and protocol.call is None

    events = []
    for message in vector["messages"]:
        events.extend(protocol.receive(to_wire(message)))
    if "events" in vector:
        assert [event_json(e) for e in events] == vector["events"]
    if "stream_auth_token" in vector:
        assert protocol.stream_auth_token == vector["stream_auth_token"]
    stopped = any(isinstance(e, StreamStopped) for e in events)
    assert protocol.state is (State.STOPPED if stopped else State.STARTED)
    assert protocol.call is not None and protocol.call.provider == provider

    for exchange in vector.get("exchanges", []):
        cmd = command(exchange["command"])
        if "error" in exchange:
            with pytest.raises(getattr(errors, exchange["error"])):
                protocol.send(cmd)
            continue
        wire = protocol.send(cmd)
        assert all(type(frame) is str for frame in wire)
        assert [json.loads(frame) for frame in wire] == exchange["wire"]


def _invalid_cases() -> list[tuple[str, Path, int]]:
    return [
        (provider, path, index)
        for provider, path in vector_files("invalid")
        for index in range(len(load(path)["cases"]))
    ]


@pytest.mark.parametrize(("provider", "path", "index"), _invalid_cases(), ids=_id)
def test_invalid_input_is_a_remote_protocol_error(provider: str, path: Path, index: int) -> None:
    vector = load(path)
    case = vector["cases"][index]
    start = case.get("start", vector["start"])
    protocol = new_protocol(provider, vector)
    for message in start if case.get("after_start") else case.get("before", []):
        protocol.receive(to_wire(message))

    with pytest.raises(errors.RemoteProtocolError) as info:
        protocol.receive(case_message(case))
    error = info.value
    assert type(error).__name__ == case["error"], (case["name"], error)
    assert case["field"] in str(error), (case["name"], str(error))
    assert error.close_code == CLOSE_CODES[case["error"]]

    # FAILED is terminal: the next, perfectly valid, message is refused too, with the
    # same class and close code, and nothing can be sent.
    assert protocol.state is State.FAILED
    with pytest.raises(type(error)):
        protocol.receive(to_wire(start[-1]))
    with pytest.raises(errors.LocalProtocolError):
        protocol.send(ClearAudio())
