"""The public URLs providers use to reach us, rebuilt exactly (protocols.md §5.6).

Signatures cover the URL the provider requested, and the answer documents must name
a ``wss://`` URL the provider can reach. Where that URL comes from, in order:

1. ``config.public_url`` (``https://voice.example.com``, optionally with a path prefix
   that a proxy strips): always right, the recommended setting.
2. ``X-Forwarded-Proto``/``X-Forwarded-Host`` or RFC 7239 ``Forwarded`` -- only when
   ``config.trust_forwarded`` (a proxy you control sets them; anyone else could lie).
3. The request's own ``Host`` header. The scheme is then unknown behind a TLS-terminating
   tunnel, so signatures are checked against both ``https`` and ``http``, and stream URLs
   use ``wss`` unless the host is a loopback address (local tests speak plain ``ws``).

Pure functions of strings: no aiohttp, no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["Origin", "find_header", "public_origin", "stream_url"]

logger = logging.getLogger("mediastream.control")

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
_warned_hosts: set[str] = set()


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, ``host[:port]`` and path prefix the public reaches this server at.

    ``certain`` is False when the scheme was guessed from a bare ``Host`` header.
    """

    scheme: str
    netloc: str
    prefix: str = ""
    certain: bool = True

    def below(self, mount_prefix: str) -> Origin:
        """This origin with ``mount_prefix`` (where an ASGI app is mounted) added to its
        path prefix: URLs built from it point into the mounted application."""
        if not mount_prefix:
            return self
        return Origin(self.scheme, self.netloc, self.prefix + mount_prefix.rstrip("/"),
                      self.certain)

    def http_url(self, path: str) -> str:
        """``scheme://netloc/prefix/path`` for an HTTP(S) callback path."""
        return f"{self.scheme}://{self.netloc}{self.prefix}{path}"

    def http_urls(self, raw_path_qs: str) -> list[str]:
        """Candidate URLs a provider may have signed for ``raw_path_qs``."""
        urls = [self.http_url(raw_path_qs)]
        if not self.certain:
            other = "http" if self.scheme == "https" else "https"
            urls.append(f"{other}://{self.netloc}{self.prefix}{raw_path_qs}")
        return urls

    @property
    def ws_scheme(self) -> str:
        if self.scheme in ("https", "wss"):
            return "wss"
        if self.certain or _host_only(self.netloc) in _LOOPBACK_HOSTS:
            return "ws"
        return "wss"

    def ws_url(self, path: str) -> str:
        return f"{self.ws_scheme}://{self.netloc}{self.prefix}{path}"

    def ws_urls(self, raw_path_qs: str) -> list[str]:
        """Candidate ``wss://`` URLs Twilio may have signed on a media upgrade (§1.7)."""
        urls = [self.ws_url(raw_path_qs)]
        if not self.certain:
            other = "ws" if self.ws_scheme == "wss" else "wss"
            urls.append(f"{other}://{self.netloc}{self.prefix}{raw_path_qs}")
        return urls


def _host_only(netloc: str) -> str:
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _first(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _forwarded_pair(headers: Mapping[str, str], name: str) -> str | None:
    # RFC 7239: Forwarded: for=1.2.3.4;proto=https;host=example.com, for=...
    element = _first(find_header(headers, "forwarded"))
    if not element:
        return None
    for pair in element.split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"') or None
    return None


def find_header(headers: Mapping[str, str], name: str) -> str | None:
    """The header ``name`` (lower case) in ``headers``, whatever case the mapping uses."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def public_origin(
    public_url: str | None,
    trust_forwarded: bool,
    *,
    scheme: str,
    headers: Mapping[str, str],
    fallback_host: str | None = None,
) -> Origin | None:
    """The public origin of a request (see the module docstring); ``None`` if unknowable.

    ``scheme`` is how the request reached this process (``http``/``https``/``ws``/``wss``);
    ``headers`` the request headers (any case); ``fallback_host`` is used when there is
    no ``Host`` header.
    """
    if public_url:
        split = urlsplit(public_url)
        return Origin(split.scheme.lower(), split.netloc, split.path.rstrip("/"))
    if trust_forwarded:
        proto = _first(find_header(headers, "x-forwarded-proto")) or _forwarded_pair(
            headers, "proto"
        )
        host = _first(find_header(headers, "x-forwarded-host")) or _forwarded_pair(headers, "host")
        if proto or host:
            return Origin(
                (proto or scheme).lower(),
                host or find_header(headers, "host") or fallback_host or "",
                certain=bool(proto),
            )
    host = find_header(headers, "host") or fallback_host
    if not host:
        return None
    if host not in _warned_hosts and len(_warned_hosts) < 64:
        _warned_hosts.add(host)
        logger.warning(
            "MEDIASTREAM_PUBLIC_URL is not set: building public URLs from the request "
            "Host header %r; set it to the https:// URL providers reach this server at",
            host,
        )
    plain = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return Origin(plain.lower(), host, certain=False)


def stream_url(
    origin: Origin,
    provider: str,
    *,
    agent: str | None = None,
    query: Mapping[str, str] | None = None,
) -> str:
    """The media WebSocket URL: ``wss://host/ws/<provider>[/<agent>][?query]``."""
    path = f"/ws/{provider}"
    if agent:
        path += "/" + quote(agent, safe="")
    url = origin.ws_url(path)
    if query:
        url += "?" + urlencode(list(query.items()), quote_via=quote)
    return url
