"""One HTTP request to a provider's REST API: timeout, bounded retries, one log line.

Retries (docs/design.md §5: outbound provider REST calls live in the control package):

* on a connection error or timeout, and on the statuses in ``retry_statuses``
  (default 429 and 5xx), at most ``retries`` times;
* waiting ``Retry-After`` (seconds or an HTTP date) when the provider sends it, else
  exponential backoff with jitter (``backoff * 2**attempt``, capped); a ``Retry-After``
  longer than ``max_retry_after`` is not waited for: the response is returned as is;
* non-idempotent requests (creating a call) pass a narrower ``retry_statuses`` and
  ``retry_connection_errors=False``: a 500 or a dropped connection may mean the call
  was placed, and retrying would ring the callee twice.

Every failed attempt logs one line naming the provider, the operation and the call.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json as jsonlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import MediaStreamError

__all__ = [
    "CREATE_RETRY_STATUSES",
    "DEFAULT_RETRY_STATUSES",
    "ControlUnavailable",
    "ProviderAPIError",
    "RestClient",
    "RestResponse",
    "basic_authorization",
    "path_segment",
    "raise_for_status",
    "response_field",
]

logger = logging.getLogger("mediastream.control.rest")

DEFAULT_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ProviderAPIError(MediaStreamError):
    """A provider REST request failed for good (after any retries).

    ``status`` is the final HTTP status (``None`` when no response arrived), ``code``
    and ``detail`` what the provider's error body said.
    """

    def __init__(
        self,
        provider: str,
        operation: str,
        call_id: str | None,
        status: int | None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.call_id = call_id
        self.status = status
        self.code = code
        self.detail = detail
        what = f"HTTP {status}" if status is not None else "no response"
        extra = f" code {code}" if code else ""
        reason = f": {detail}" if detail else ""
        super().__init__(f"{provider} {operation} call={call_id or '-'}: {what}{extra}{reason}")


@dataclass(frozen=True, slots=True)
class RestResponse:
    """A provider response: status, parsed body (JSON, else text, else None), headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_details(self) -> tuple[str | None, str | None]:
        """``(code, message)`` from Twilio, Telnyx or Plivo error bodies, as strings."""
        return error_details(self.body)


def error_details(body: Any) -> tuple[str | None, str | None]:
    """Error code and message in whichever shape the provider uses.

    Twilio ``{"code": 20404, "message": ...}``; Telnyx ``{"errors": [{"code": "90018",
    "title": ..., "detail": ...}]}``; Plivo ``{"error": "..."}`` (string or object).
    """
    if not isinstance(body, dict):
        text = body.strip()[:200] if isinstance(body, str) and body.strip() else None
        return None, text
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = first.get("code")
        message = first.get("detail") or first.get("title")
        return (None if code is None else str(code)), (None if message is None else str(message))
    if "code" in body or "message" in body:
        code = body.get("code")
        message = body.get("message")
        return (None if code is None else str(code)), (None if message is None else str(message))
    error = body.get("error")
    if isinstance(error, dict):
        return None, jsonlib.dumps(error)[:200]
    if error is not None:
        return None, str(error)
    return None, None


class RestClient:
    """Requests against one provider's API base URL with shared retry behaviour.

    The :class:`aiohttp.ClientSession` is injected and never closed here. ``sleep`` is
    injectable so tests need not wait out real backoff.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        call_id: str | None = None,
        json: Any = None,
        form: Sequence[tuple[str, str]] | None = None,
        retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES,
        retry_connection_errors: bool = True,
    ) -> RestResponse:
        """Send the request, retrying as the module docstring says; return the last response.

        Raises :class:`ProviderAPIError` only when no response arrived at all.
        """
        url = self.base_url + path
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                response = await self._once(method, url, json=json, form=form)
            except (TimeoutError, aiohttp.ClientError) as exc:
                detail = str(exc) or type(exc).__name__
                if not retry_connection_errors or attempt + 1 == attempts:
                    logger.error(
                        "%s %s call=%s: %s %s failed: %s (attempt %d/%d, giving up)",
                        self.provider, operation, call_id or "-", method, path, detail,
                        attempt + 1, attempts,
                    )
                    raise ProviderAPIError(
                        self.provider, operation, call_id, None, detail=detail
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning(
                    "%s %s call=%s: %s %s failed: %s (attempt %d/%d), retrying in %.2f s",
                    self.provider, operation, call_id or "-", method, path, detail,
                    attempt + 1, attempts, delay,
                )
                await self._sleep(delay)
                continue
            if response.ok:
                return response
            code, message = response.error_details()
            if response.status in retry_statuses and attempt + 1 < attempts:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if retry_after is None:
                    delay = self._backoff(attempt)
                elif retry_after > self.max_retry_after:
                    logger.error(
                        "%s %s call=%s: HTTP %d, Retry-After %.0f s exceeds %.0f s: giving up",
                        self.provider, operation, call_id or "-", response.status, retry_after,
                        self.max_retry_after,
                    )
                    return response
                else:
                    delay = retry_after
                logger.warning(
                    "%s %s call=%s: HTTP %d%s%s (attempt %d/%d), retrying in %.2f s",
                    self.provider, operation, call_id or "-", response.status,
                    f" code {code}" if code else "", f": {message}" if message else "",
                    attempt + 1, attempts, delay,
                )
                await self._sleep(delay)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        call_id: str | None = None,
        json: Any = None,
        form: Sequence[tuple[str, str]] | None = None,
    ) -> RestResponse:
        """:meth:`request`, then :class:`ProviderAPIError` unless the answer is a 2xx."""
        response = await self.request(
            method, path, operation=operation, call_id=call_id, json=json, form=form
        )
        raise_for_status(response, self.provider, operation, call_id)
        return response

    async def create_call(
        self,
        path: str,
        *result: str,
        json: Any = None,
        form: Sequence[tuple[str, str]] | None = None,
    ) -> str:
        """POST a request that places a call; the id at ``result`` in the JSON answer.

        Retried only on :data:`CREATE_RETRY_STATUSES` and never after a lost connection
        (a retry of a call that was placed would ring the callee twice).
        """
        response = await self.request(
            "POST",
            path,
            operation="create call",
            json=json,
            form=form,
            retry_statuses=CREATE_RETRY_STATUSES,
            retry_connection_errors=False,
        )
        raise_for_status(response, self.provider, "create call", None)
        return response_field(response, self.provider, "create call", *result)

    async def _once(
        self, method: str, url: str, *, json: Any, form: Sequence[tuple[str, str]] | None
    ) -> RestResponse:
        headers = {"Accept": "application/json", **self.headers}
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        elif form is not None:
            kwargs["data"] = list(form)
        async with self.http.request(
            method, url, headers=headers, timeout=self.timeout, **kwargs
        ) as resp:
            raw = await resp.read()
            text = raw.decode("utf-8", "replace")
            body: Any = None
            if text.strip():
                try:
                    body = jsonlib.loads(text)
                except ValueError:
                    body = text
            return RestResponse(resp.status, body, dict(resp.headers))

    def _backoff(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base * (0.5 + random.random() / 2)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (RFC 9110 §10.2.3: delay-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())


# ------------------------------------------------------- helpers for the API clients

#: Creating a call is retried only when the provider says it did nothing (429, 503).
CREATE_RETRY_STATUSES = frozenset({429, 503})


class ControlUnavailable(MediaStreamError):
    """The operation needs credentials that are not configured, or the provider lacks it."""


def path_segment(value: str) -> str:
    """``value`` quoted for a URL path segment.

    Everything but unreserved characters and ``:`` is escaped (Telnyx ids look like
    ``v3:...``; ``:`` is a valid path character, RFC 3986 §3.3).
    """
    return quote(value, safe=":")


def basic_authorization(login: str, password: str) -> str:
    """An ``Authorization: Basic`` value (RFC 7617), UTF-8 credentials."""
    raw = f"{login}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def raise_for_status(
    response: RestResponse, provider: str, operation: str, call_id: str | None
) -> None:
    """Raise :class:`ProviderAPIError` unless ``response`` is a 2xx."""
    if not response.ok:
        code, detail = response.error_details()
        raise ProviderAPIError(provider, operation, call_id, response.status, code, detail)


def response_field(response: RestResponse, provider: str, operation: str, *path: str) -> str:
    """The non-empty string at ``path`` in a JSON response, else ProviderAPIError."""
    node: Any = response.body
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node:
        raise ProviderAPIError(
            provider, operation, None, response.status, detail=f"response lacks {'.'.join(path)}"
        )
    return node
