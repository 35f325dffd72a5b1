"""Router-LLM clients: one small interface, several implementations, one resolver.

A router LLM only has to continue a chat, optionally constrained to a JSON schema:
:meth:`RouterLLM.complete`. Implementations:

- ``openai`` (alias ``vllm``): any OpenAI-compatible HTTP server, in production the vLLM server
  managed by :mod:`router.llm.server`; structured output via ``response_format`` JSON schema;
- ``transformers``: an in-process Hugging Face causal LM (the embedded default, Qwen2.5-Coder-0.5B
  from the model store); no schema-constrained decoding, so callers prefill the assistant turn;
- ``none``: no LLM at all; every call raises :class:`RouterLLMUnavailableError` so the decomposer
  takes its flagged clause-splitter path.

The managed server (:class:`router.llm.server.VLLMServer`) and the HTTP client
(:class:`core.http.OpenAICompatClient`) live in their own modules.

Example:
    >>> llm = make_router_llm("openai", base_url="http://127.0.0.1:8011/v1", model="qwen-0.5b")
    >>> llm.complete([{"role": "user", "content": "Say hi"}], max_tokens=8)
    >>> llm = router_llm_from_settings(Settings())      # what the server and CLI use
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.resolver import Resolver
from router.llm.errors import LLMError, LLMUnavailable

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "NoRouterLLM",
    "OpenAIRouterLLM",
    "Reachable",
    "RouterLLM",
    "RouterLLMError",
    "RouterLLMUnavailableError",
    "ServedWithFallback",
    "TransformersRouterLLM",
    "json_closed",
    "make_router_llm",
    "router_llm_from_settings",
    "router_llm_resolver",
]

#: The router LLM answered badly or failed mid-call.
RouterLLMError = LLMError
#: The router LLM cannot be reached or loaded.
RouterLLMUnavailableError = LLMUnavailable


class RouterLLM(ABC):
    """Chat completion with optional JSON-schema constraint. Subclasses implement :meth:`complete`."""

    name: ClassVar[str]
    supports_json_schema: ClassVar[bool] = False

    @abstractmethod
    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        prefill: str = "",
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> str:
        """Return the assistant's text. With ``prefill`` the returned text starts with it.

        Raises:
            RouterLLMUnavailableError: backend unreachable or not loadable.
            RouterLLMError: any other failure.
        """

    def describe(self) -> str:
        return self.name


class OpenAIRouterLLM(RouterLLM):
    """An OpenAI-compatible server (vLLM), through :class:`core.http.OpenAICompatClient`.

    Args:
        base_url: e.g. ``http://127.0.0.1:8011/v1``.
        model: the served model name.
        timeout: seconds per HTTP call; retries: extra attempts on connection errors / 5xx.
        client: an existing client (tests).
    """

    name = "openai"
    synonyms = ("vllm",)
    supports_json_schema = True

    def __init__(self, base_url: str, model: str, *, timeout: float = 60.0, retries: int = 1, client: Any = None):
        self.base_url, self.model = base_url.rstrip("/"), model
        self.timeout, self.retries = timeout, retries
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from core.http import OpenAICompatClient

            self._client = OpenAICompatClient(self.base_url, self.model, timeout=self.timeout, retries=self.retries,
                                              backoff=0.2)
        return self._client

    def complete(self, messages, *, json_schema=None, prefill="", max_tokens=256, temperature=0.0) -> str:
        try:
            return self.client.chat(messages, json_schema=json_schema, max_tokens=max_tokens, temperature=temperature)
        except LLMError:
            raise
        except Exception as exc:  # e.g. a read timeout the client did not wrap
            raise RouterLLMError(f"router LLM at {self.base_url} failed: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> str:
        return f"openai:{self.model}@{self.base_url}"


def json_closed(text: str) -> bool:
    """True once ``text`` holds a complete JSON object or array from its first bracket (strings and escapes
    respected), whatever follows it.

    >>> json_closed('{"subtasks": [{"subtask": "a]"}]')
    False
    >>> json_closed('{"subtasks": [{"subtask": "a]"}]} and more')
    True
    """
    depth, in_string, escaped, opened = 0, False, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth, opened = depth + 1, True
        elif ch in "}]":
            depth -= 1
            if opened and depth <= 0:
                return True
    return False


class TransformersRouterLLM(RouterLLM):
    """An in-process causal LM (model-store name or folder), loaded on first use.

    Args:
        model: model-store name (default ``qwen-0.5b``) or a local folder.
        pool: the shared :class:`experts.backends.ModelPool` (model store, threads), so the router and the
            default experts use one loaded copy of the same model.
    """

    name = "transformers"

    def __init__(self, model: str = "qwen-0.5b", *, pool: Any):
        self.model = model
        self.pool = pool
        self._folder: Path | None = None

    def complete(self, messages, *, json_schema=None, prefill="", max_tokens=256, temperature=0.0) -> str:
        from experts.backends import BackendUnavailableError

        try:
            if self._folder is None:
                p = Path(self.model)
                self._folder = self.pool.resolve(None, str(p)) if p.is_dir() else self.pool.resolve(self.model)
            # a prefilled JSON object ends where it closes: stop there instead of running to max_tokens
            stop = (lambda more: json_closed(prefill + more)) if prefill.lstrip().startswith(("{", "[")) else None
            text = self.pool.generate(self._folder, messages, max_tokens=max_tokens, temperature=temperature,
                                      prefill=prefill, stop_when=stop, cache_prefix=True)
        except BackendUnavailableError as exc:
            raise RouterLLMUnavailableError(str(exc)) from exc
        except Exception as exc:
            raise RouterLLMError(f"in-process router LLM failed: {type(exc).__name__}: {exc}") from exc
        return prefill + text

    def describe(self) -> str:
        return f"transformers:{self.model}"


class Reachable:
    """Whether an OpenAI-compatible server answers its ``/health``: probed at most every ``recheck_s`` seconds,
    changes logged. Call it."""

    def __init__(self, served: OpenAIRouterLLM, *, recheck_s: float = 10.0):
        self.served, self.recheck_s = served, recheck_s
        self.up: bool | None = None
        self._checked = float("-inf")

    def __call__(self) -> bool:
        import time

        now = time.monotonic()
        if self.up is None or now - self._checked >= self.recheck_s:
            up = self.served.client.healthy()
            if up != self.up:
                log.log(logging.INFO if up else logging.WARNING,
                        "LLM server reachable" if up else "LLM server unreachable", extra={"server": self.served.describe()})
            self.up, self._checked = up, now
        return bool(self.up)

    def forget(self) -> None:
        """Probe again on the next call (after a failed request)."""
        self.up, self._checked = False, float("-inf")


class ServedWithFallback(RouterLLM):
    """The router LLM a vLLM server serves, and — while that server cannot be reached — the same model in
    process (logged once per outage, and flagged: :attr:`on_fallback`, :meth:`describe`, ``/health``).

    Reachability is the server's ``/health`` (at most one probe every ``recheck_s`` seconds), so calls move
    back to the server as soon as it is up — e.g. once the vLLM that ``qsef serve`` started is healthy.
    Structured output (JSON schema) is offered only while the server is reachable; the in-process model
    gets the decomposer's prefilled JSON instead.

    Args:
        served: the OpenAI-compatible client of the server.
        in_process: the fallback.
        recheck_s: seconds between reachability probes.
    """

    name = "vllm"

    def __init__(self, served: OpenAIRouterLLM, in_process: RouterLLM, *, recheck_s: float = 10.0):
        self.served, self.in_process = served, in_process
        self._reachable = Reachable(served, recheck_s=recheck_s)

    @property
    def on_fallback(self) -> bool:
        """True while calls go to the in-process model because the server is unreachable."""
        return not self._reachable()

    @property
    def supports_json_schema(self) -> bool:  # type: ignore[override]
        return self._reachable()

    def complete(self, messages, *, json_schema=None, prefill="", max_tokens=256, temperature=0.0) -> str:
        if self._reachable():
            try:
                return self.served.complete(messages, json_schema=json_schema, prefill=prefill,
                                            max_tokens=max_tokens, temperature=temperature)
            except RouterLLMUnavailableError:
                self._reachable.forget()
                log.warning("router LLM server went away: in-process fallback", extra={"server": self.served.describe()})
        return self.in_process.complete(messages, prefill=prefill, max_tokens=max_tokens, temperature=temperature)

    def describe(self) -> str:
        if self._reachable():
            return self.served.describe()
        return f"{self.in_process.describe()} (fallback: {self.served.describe()} unreachable)"


class NoRouterLLM(RouterLLM):
    """No router LLM configured: decomposition always uses the (flagged) clause splitter."""

    name = "none"

    def complete(self, messages, *, json_schema=None, prefill="", max_tokens=256, temperature=0.0) -> str:
        raise RouterLLMUnavailableError("no router LLM configured (router_backend = none)")


router_llm_resolver: Resolver[RouterLLM] = Resolver(
    RouterLLM, [OpenAIRouterLLM, TransformersRouterLLM, NoRouterLLM], suffix="routerllm", kind="router LLM")


def make_router_llm(llm: str | RouterLLM | type[RouterLLM], **kwargs: Any) -> RouterLLM:
    """Resolve a name, class or instance to a router-LLM client (see :class:`core.resolver.Resolver`).

    Raises:
        UnknownComponentError: unknown name (a ``ValueError``), naming the valid choices.
    """
    return router_llm_resolver.make(llm, kwargs)


def router_llm_from_settings(settings: Settings, *, pool: Any = None, timeout: float = 60.0,
                             retries: int = 1) -> RouterLLM:
    """The router LLM the settings ask for (``router_backend``, ``router_model``, ``llm_url``…).

    ``vllm`` without ``llm_url`` is the managed server on ``llm_host:llm_port`` with the same model in
    process as the flagged fallback (:class:`ServedWithFallback`); with ``llm_url`` (or ``openai``) it is
    that endpoint alone.
    """
    backend = settings.router_backend
    if backend == "transformers" or (backend == "vllm" and not settings.llm_url):
        if pool is None:
            from experts.backends import ModelPool

            pool = ModelPool(settings)
        local = TransformersRouterLLM(settings.router_model, pool=pool)
        if backend == "transformers":
            return local
        # the managed server, with the same model in process as the flagged fallback
        served = OpenAIRouterLLM(f"http://{settings.llm_host}:{settings.llm_port}/v1", settings.router_model,
                                 timeout=timeout, retries=retries)
        return ServedWithFallback(served, local)
    if backend in ("vllm", "openai"):
        base_url = settings.llm_url or f"http://{settings.llm_host}:{settings.llm_port}/v1"
        return OpenAIRouterLLM(base_url, settings.router_model, timeout=timeout, retries=retries)
    return NoRouterLLM()
