"""``mediastream serve``: run the server from the command line.

Settings come from :meth:`Config.from_env` (``MEDIASTREAM_*``), then these flags. The
bot is loaded before anything binds, so a wrong SPEC fails at once with a clear message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from mediastream.agents import parse_agent_option
from mediastream.config import Config
from mediastream.recording import check_record_dir

__all__ = ["add_parser", "config_from_args", "run"]

# flag -> (Config field, type, help)
_LIMITS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-calls", "max_calls", int, "concurrent calls (503 before the upgrade, 1013 after)"),
    ("--max-message-size", "max_message_size", int, "largest WebSocket message, bytes (1009)"),
    ("--max-head-size", "max_head_size", int, "largest HTTP request head, bytes (431)"),
    ("--head-timeout", "head_timeout", float, "seconds to receive the request head (408)"),
    ("--handshake-timeout", "handshake_timeout", float, "seconds to finish the upgrade"),
    ("--first-message-timeout", "first_message_timeout", float, "seconds until start (1008)"),
    ("--idle-media-timeout", "idle_media_timeout", float, "seconds without media (1008)"),
    ("--send-timeout", "send_timeout", float, "seconds a send may block before abort"),
    ("--drain-timeout", "drain_timeout", float, "seconds live calls get at shutdown"),
    ("--bot-sample-rate", "bot_sample_rate", int, "PCM rate handed to bots"),
    ("--bot-frame-ms", "bot_frame_ms", int,
     "ms of audio per frame handed to bots: 20, 40 or 60 (fewer frames, more latency)"),
    ("--call-registry-ttl", "call_registry_ttl", float,
     "seconds a live call stays in the shared registry after its instance's last heartbeat"),
    ("--command-timeout", "command_timeout", float,
     "seconds a call command forwarded to the instance holding the call may take (504)"),
    ("--playout-lead", "playout_lead", float, "seconds of audio sent ahead of real time"),
    ("--max-bot-audio", "max_bot_audio_s", float,
     "seconds of bot audio queued ahead of playout before the call ends (1011)"),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``mediastream`` command line."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        allow_abbrev=False,
        help="run the media-stream server",
        description="Serve Twilio, Telnyx and Plivo media streams and their webhooks "
        "on one port. Settings default to MEDIASTREAM_* environment variables.",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8765)")
    parser.add_argument(
        "--bot",
        metavar="SPEC",
        help="default bot: echo, module, module:function or file.py[:function] "
        "(default bot.parrot, needs the [bot] extra)",
    )
    parser.add_argument(
        "--agent",
        metavar="NAME=SPEC",
        action="append",
        default=[],
        help="a named agent (repeatable); calls pick it by path /ws/<provider>/NAME or "
        "an 'agent' custom parameter",
    )
    parser.add_argument(
        "--listen-only",
        metavar="NAME",
        action="append",
        default=[],
        help="make agent NAME (from --agent) listen-only (repeatable): its answer documents "
        "fork both tracks of the call to it and the call goes on to --listen-continue",
    )
    parser.add_argument(
        "--listen-continue",
        metavar="TARGET",
        help="where a listen-only agent's call goes on: a number or sip: URI to dial, or "
        "an http(s) URL of a document to continue with",
    )
    parser.add_argument(
        "--telnyx-l16-byteorder",
        choices=("auto", "big", "little"),
        help="Telnyx L16 byte order: auto (default: decided per call from the audio, "
        "counted in /metrics) or forced both ways",
    )
    parser.add_argument(
        "--record",
        metavar="DIR",
        help="record every call to DIR/<call_id>.wav (stereo: caller left, what the caller "
        "heard right) with a JSON sidecar; off by default (README: Recording calls)",
    )
    parser.add_argument("--public-url", help="https:// URL providers reach this server at")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS: certificate chain file")
    parser.add_argument("--tls-key", metavar="PEM", help="serve TLS: private key file")
    parser.add_argument(
        "--redis-url", metavar="URL",
        help="share stream tokens, the live-call registry and call commands between "
        "instances through Redis (redis://host:6379/0; needs the [cluster] extra)")
    parser.add_argument(
        "--workers", type=int, help="processes sharing the port (SO_REUSEPORT, Linux)"
    )
    for flag, _field, kind, text in _LIMITS:
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--batch-resampling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="resample the frames of all calls together once per loop turn (default on; "
        "identical audio, less CPU)",
    )
    parser.add_argument(
        "--fast-frames",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="parse a live call's plain text frames without websockets' parser (default on; "
        "same answers, less CPU)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING ...)"
    )
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """``base`` (default: from the environment) overlaid with the given flags."""
    config = Config.from_env() if base is None else base
    agents = [config.agents] if config.agents else []
    for text in args.agent:
        name, spec = parse_agent_option(text)
        agents.append(f"{name}={spec}")
    listen_only = [config.listen_only_agents] if config.listen_only_agents else []
    listen_only += args.listen_only
    changes: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "bot": args.bot,
        "public_url": args.public_url,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "workers": args.workers,
        "redis_url": args.redis_url,
        "agents": ",".join(agents) if args.agent else None,
        "listen_only_agents": ",".join(listen_only) if args.listen_only else None,
        "listen_continue": args.listen_continue,
        "telnyx_l16_byteorder": args.telnyx_l16_byteorder,
        "batch_resampling": args.batch_resampling,
        "fast_frames": args.fast_frames,
        "record_dir": args.record,
    }
    for flag, field, _kind, _text in _LIMITS:
        changes[field] = getattr(args, flag.lstrip("-").replace("-", "_"))
    return config.with_overrides(**changes)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mediastream serve``."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # websockets logs every open/close at INFO; the call log already says it.
        logging.getLogger("mediastream.server.websocket").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        if config.record_dir:
            check_record_dir(config.record_dir)
    except ValueError as exc:
        print(f"mediastream serve: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1:
        from .workers import run_workers

        return run_workers(config)
    from mediastream.agents import registry_from_config

    from .serve import serve

    try:
        registry = registry_from_config(config)
    except ValueError as exc:  # BotLoadError, or a listen-only name that is no agent
        print(f"mediastream serve: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, registry))
    except OSError as exc:
        print(f"mediastream serve: cannot listen on {config.host}:{config.port}: {exc}",
              file=sys.stderr)
        return 1
    return 0
