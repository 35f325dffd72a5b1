"""Live load of the experts served by vLLM: what ``C_model`` reads besides size and history.

A vLLM OpenAI-compatible server exports Prometheus metrics at ``/metrics`` (next to ``/v1``). This
module reads three of them (the names of vLLM 0.32, checked against a running server):

- ``vllm:num_requests_running`` — sequences in the running batch;
- ``vllm:num_requests_waiting`` — requests queued for a slot;
- ``vllm:kv_cache_usage_perc`` — KV-cache blocks in use, 0..1 (older releases: ``vllm:gpu_cache_usage_perc``).

Values are summed over label sets (one engine may serve a base model and its LoRA adapters: the load
is the server's). :class:`LiveLoad` caches each server's sample for ``ttl_s`` seconds — a failed fetch
too, so a dead server costs one short timeout per TTL, not one per request — and fetches the stale
servers of one scoring call concurrently. Only experts on the ``openai`` backend with a ``base_url``
are measured; the rest have no live load (``None``), and scoring then uses size and history alone.

The scalar handed to QSEF (:meth:`LoadSample.load`, 0..1) is
``0.5 · kv_cache + 0.5 · min(1, (running + 2·waiting) / busy_requests)``: a queue weighs double
because a waiting request has not even started. An expert is *saturated* when ``waiting`` reaches
``waiting_threshold``; the router then sheds its traffic to the next-best expert (flagged).

Example:
    >>> live = LiveLoad(ttl_s=2.0)
    >>> live.for_experts(registry.list(enabled_only=True))
    {'law-small': LoadSample(running=3, waiting=0, kv_cache=0.12, ...)}
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

__all__ = ["LiveLoad", "LoadSample", "metrics_url", "parse_vllm_metrics"]

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True)
class LoadSample:
    running: float
    waiting: float
    kv_cache: float
    at: float
    busy_requests: int = 8
    waiting_threshold: int = 4

    @property
    def load(self) -> float:
        """0 (idle) .. 1 (full): half KV-cache use, half queue pressure (see the module doc)."""
        queue = min(1.0, (self.running + 2.0 * self.waiting) / max(1, self.busy_requests))
        return round(min(1.0, max(0.0, 0.5 * min(1.0, self.kv_cache) + 0.5 * queue)), 4)

    @property
    def saturated(self) -> bool:
        return self.waiting >= self.waiting_threshold


def metrics_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/metrics``."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/metrics"


def parse_vllm_metrics(text: str) -> dict[str, float] | None:
    """``{"running", "waiting", "kv_cache"}`` from a Prometheus text page; ``None`` when it has no vLLM
    request gauges (not a vLLM server)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _RUNNING or sample.name == _WAITING or sample.name in _KV:
                sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    if _RUNNING not in sums and _WAITING not in sums:
        return None
    kv = next((sums[k] for k in _KV if k in sums), 0.0)
    return {"running": sums.get(_RUNNING, 0.0), "waiting": sums.get(_WAITING, 0.0), "kv_cache": kv}


class LiveLoad:
    """Cached reads of the vLLM servers' ``/metrics``.

    Args:
        ttl_s: how long one server's sample (or failure) is reused.
        timeout_s: budget of one fetch.
        busy_requests: running + 2·waiting at which the queue part of :attr:`LoadSample.load` is 1.
        waiting_threshold: waiting requests at which an expert counts as saturated.
    """

    def __init__(self, *, ttl_s: float = 2.0, timeout_s: float = 0.5, busy_requests: int = 8,
                 waiting_threshold: int = 4, client: httpx.Client | None = None):
        self.ttl_s, self.timeout_s = ttl_s, timeout_s
        self.busy_requests, self.waiting_threshold = busy_requests, waiting_threshold
        self._client = client or httpx.Client(timeout=timeout_s)
        self._cache: dict[str, tuple[float, LoadSample | None]] = {}
        self._lock = threading.Lock()

    def sample(self, base_url: str) -> LoadSample | None:
        """The server's load now (or as of ``ttl_s`` ago); ``None`` when it cannot be read."""
        url = metrics_url(base_url)
        with self._lock:
            hit = self._cache.get(url)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        sample = self._fetch(url)
        with self._lock:
            self._cache[url] = (time.monotonic(), sample)
        return sample

    def _fetch(self, url: str) -> LoadSample | None:
        try:
            r = self._client.get(url, timeout=self.timeout_s)
            r.raise_for_status()
            values = parse_vllm_metrics(r.text)
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("live load unreadable", extra={"url": url, "error": str(exc)[:200]})
            return None
        if values is None:
            return None
        return LoadSample(**values, at=time.time(), busy_requests=self.busy_requests,
                          waiting_threshold=self.waiting_threshold)

    def for_experts(self, specs: Iterable[Any]) -> dict[str, LoadSample]:
        """``{expert name: sample}`` for the experts whose backend is a server with readable metrics."""
        by_url: dict[str, list[str]] = {}
        for s in specs:
            url = s.backend_kwargs.get("base_url") if s.backend == "openai" else None
            if isinstance(url, str):
                by_url.setdefault(url, []).append(s.name)
        if not by_url:
            return {}
        urls = list(by_url)
        if len(urls) == 1:
            samples = [self.sample(urls[0])]
        else:
            with cf.ThreadPoolExecutor(max_workers=min(8, len(urls)), thread_name_prefix="live-load") as pool:
                samples = list(pool.map(self.sample, urls))
        return {name: smp for url, smp in zip(urls, samples, strict=True) if smp is not None
                for name in by_url[url]}

    def close(self) -> None:
        self._client.close()
