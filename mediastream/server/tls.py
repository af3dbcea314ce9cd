"""TLS for the server's own port (``Config.tls_cert``/``tls_key``)."""

from __future__ import annotations

import ssl

from mediastream.config import Config

__all__ = ["tls_context"]


def tls_context(config: Config) -> ssl.SSLContext | None:
    """A server TLS context from ``config.tls_cert``/``tls_key``, or ``None``."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    return context
