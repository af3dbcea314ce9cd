"""The control plane: answer documents, dial-out, call control and request authentication.

Everything around the media stream that a deployment needs, for Twilio, Telnyx and
Plivo, served by the same aiohttp application as the media (protocols.md §1.4–1.7,
§2.4–2.7, §3.4–3.7):

* :func:`add_control_routes` mounts ``/twilio``, ``/telnyx``, ``/plivo`` (answer
  documents), ``/<provider>/stream-status`` and ``/dialout``;
* :class:`ProviderClients` and the per-provider REST clients hang up (idempotently),
  transfer, send DTMF, record and place calls;
* :mod:`mediastream.control.auth` checks webhook signatures, media upgrades
  (:func:`check_media_upgrade`, HTTP 403) and stream starts (:func:`check_stream_start`,
  close 1008); :func:`auth_warnings` lists what the server should log at start-up;
* :class:`StreamTokens` issues the per-call tokens the answer documents carry.

Modules: ``signatures`` (pure crypto), ``tokens``, ``urls`` (public URL rebuilding),
``documents`` (XML), ``rest`` (HTTP with retries), ``clients``, ``auth`` (policy),
``webhooks``, ``dialout``, ``routes``.
"""

from __future__ import annotations

from .auth import (
    STREAM_TOKEN_PARAMETERS,
    auth_enabled,
    auth_warnings,
    check_media_upgrade,
    check_stream_start,
    stream_tokens,
)
from .clients import (
    ControlUnavailable,
    PlivoClient,
    ProviderClients,
    TelnyxClient,
    TelnyxStreamOptions,
    TwilioClient,
)
from .rest import ProviderAPIError
from .routes import add_control_routes, validate_control_config
from .tokens import StreamTokens
from .webhooks import AgentLookup

__all__ = [
    "STREAM_TOKEN_PARAMETERS",
    "AgentLookup",
    "ControlUnavailable",
    "PlivoClient",
    "ProviderAPIError",
    "ProviderClients",
    "StreamTokens",
    "TelnyxClient",
    "TelnyxStreamOptions",
    "TwilioClient",
    "add_control_routes",
    "auth_enabled",
    "auth_warnings",
    "check_media_upgrade",
    "check_stream_start",
    "stream_tokens",
    "validate_control_config",
]
