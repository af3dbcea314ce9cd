"""``python -m mediastream.healthcheck``: is the server in this container serving?

The container image's ``HEALTHCHECK`` (and any orchestrator's exec probe) runs this: it
asks ``GET /healthz`` on the server's own port and exits 0 on ``200``, 1 on anything else
-- ``503`` while the server drains, a refused connection (a drain closes the listening
socket), a timeout. Slim images have no curl, so it is the standard library alone plus
:mod:`mediastream.config` (itself standard library only): the port, the interface and
TLS are read from the environment exactly as ``mediastream serve`` reads them, so the
check follows ``MEDIASTREAM_PORT`` and ``MEDIASTREAM_TLS_CERT`` without settings of its own.
Settings given to ``serve`` as command-line flags instead are invisible here: a container
sets them as ``MEDIASTREAM_*`` variables.

It runs every few seconds for the life of the container, so it stays cheap: no aiohttp,
no numpy, one request with a short timeout.
"""

from __future__ import annotations

import http.client
import ssl
import sys
from collections.abc import Sequence

from mediastream.config import Config

__all__ = ["HEALTH_PATH", "check", "main", "probe_host"]

#: The route the server answers health on (mediastream.server.http).
HEALTH_PATH = "/healthz"
_TIMEOUT_S = 3.0


def probe_host(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` from inside its own container:
    the loopback address of the same family for a wildcard bind, else the host itself."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def check(config: Config, timeout: float = _TIMEOUT_S) -> tuple[bool, str]:
    """Ask ``config``'s server for its health: ``(healthy, one line saying why)``."""
    host = probe_host(config.host)
    connection: http.client.HTTPConnection
    if config.tls_cert:
        # Our own process over loopback: the certificate names the public host, not
        # 127.0.0.1, and proving who we are to ourselves adds nothing.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            host, config.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, config.port, timeout=timeout)
    where = f"{host}:{config.port}{HEALTH_PATH}"
    try:
        connection.request("GET", HEALTH_PATH)
        response = connection.getresponse()
        body = response.read(512).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"unhealthy: {where}: {exc.__class__.__name__}: {exc}"
    finally:
        connection.close()
    if response.status == 200:
        return True, f"healthy: {where}: {body}"
    return False, f"unhealthy: {where} answered {response.status}: {body}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit code for the container runtime: 0 healthy, 1 not (one line on stdout/stderr)."""
    del argv  # no options: everything comes from the environment, as for the server
    try:
        config = Config.from_env()
    except ValueError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    healthy, line = check(config)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
