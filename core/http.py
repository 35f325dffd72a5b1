"""The one client for OpenAI-compatible chat endpoints (vLLM's server, or any other).

Example:
    >>> client = OpenAICompatClient("http://127.0.0.1:8011/v1", "smollm2-135m", timeout=60)
    >>> schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    >>> client.chat([{"role": "user", "content": "Capital of France as JSON"}], json_schema=schema)
    '{"city": "Paris"}'
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The endpoint answered, but not usefully (bad status, malformed body)."""


class LLMUnavailable(LLMError):
    """The endpoint could not be reached after the configured retries."""


_RETRY_STATUS = {429, 500, 502, 503, 504}


class OpenAICompatClient:
    """Chat completions over HTTP with timeouts, bounded retries and JSON-schema structured output.

    Args:
        base_url: endpoint root including ``/v1`` (e.g. ``http://127.0.0.1:8011/v1``).
        model: the served model name.
        timeout: seconds for one request (connect + read).
        retries: extra attempts after a connection error or a retryable status (429/5xx).
        backoff: first pause between attempts in seconds; doubles each time.
        api_key: sent as a bearer token when given.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAICompatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        delay, last_exc = self.backoff, None
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(path, json=payload)
            except httpx.TransportError as exc:  # refused, reset, timed out
                last_exc = exc
            else:
                if response.status_code in _RETRY_STATUS and attempt < self.retries:
                    last_exc = LLMError(f"{response.status_code} from {self.base_url}{path}")
                elif response.status_code >= 400:
                    raise LLMError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:500]}")
                else:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise LLMError(f"{self.base_url}{path} returned a body that is not JSON") from exc
            if attempt < self.retries:
                log.warning("llm request failed, retrying", extra={"attempt": attempt + 1, "error": str(last_exc)})
                time.sleep(delay)
                delay *= 2
        if isinstance(last_exc, LLMError):
            raise last_exc
        raise LLMUnavailable(f"cannot reach the LLM at {self.base_url} after {self.retries + 1} attempts: {last_exc}")

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> str:
        """Return the assistant's text for ``messages``.

        With ``json_schema`` the server is asked to constrain decoding to that schema
        (``response_format: json_schema``; vLLM honours it, the legacy ``guided_json`` field is ignored).

        Raises:
            LLMUnavailable: the endpoint could not be reached.
            LLMError: the endpoint answered with an error or a malformed body.
        """
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            payload["stop"] = stop
        if json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json_schema, "strict": True},
            }
        body = self._post("/chat/completions", payload)
        try:
            return body["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"malformed chat completion from {self.base_url}: {str(body)[:300]}") from exc

    def chat_stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the assistant's text piece by piece as the server generates it (``stream: true``).

        Leaving the loop early, or setting ``cancel``, closes the connection; vLLM then aborts the request.
        A connection error before the first piece is retried like :meth:`chat`; after it, it is raised.

        Raises:
            LLMUnavailable: the endpoint could not be reached.
            LLMError: the endpoint answered with an error or a malformed event.
        """
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "stream": True}
        url = f"{self.base_url}/chat/completions"
        delay, last_exc = self.backoff, None
        for attempt in range(self.retries + 1):
            started = False
            try:
                with self._http.stream("POST", "/chat/completions", json=payload) as response:
                    if response.status_code < 400:
                        for piece in _sse_content(response, cancel, url):
                            started = True
                            yield piece
                        return
                    response.read()
                    last_exc = LLMError(f"{url} answered {response.status_code}: {response.text[:500]}")
                    if response.status_code not in _RETRY_STATUS or attempt == self.retries:
                        raise last_exc
            except httpx.TransportError as exc:  # refused, reset, timed out
                if started:
                    raise LLMError(f"stream from {url} broke off: {exc}") from exc
                last_exc = exc
            if attempt < self.retries:
                log.warning("llm stream failed, retrying", extra={"attempt": attempt + 1, "error": str(last_exc)})
                time.sleep(delay)
                delay *= 2
        raise LLMUnavailable(f"cannot reach the LLM at {self.base_url} after {self.retries + 1} attempts: {last_exc}")

    def healthy(self) -> bool:
        """True when the server's ``/health`` (at the root, beside ``/v1``) answers 200."""
        root = self.base_url.removesuffix("/v1")
        try:
            return httpx.get(f"{root}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def _sse_content(response: httpx.Response, cancel: threading.Event | None, url: str) -> Iterator[str]:
    """The ``delta.content`` pieces of an OpenAI chat-completion event stream, until ``[DONE]`` or ``cancel``."""
    for line in response.iter_lines():
        if cancel is not None and cancel.is_set():
            return
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            choice = json.loads(data)["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"malformed stream event from {url}: {data[:300]}") from exc
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            yield piece
