"""Who may rate an answer, how often, and how many routes run at once.

* :class:`FeedbackSigner` — ``/v1/route`` and ``/v1/chat/completions`` hand out one feedback token per
  answering expert: ``v1.<expiry>.<HMAC-SHA256(secret, request_id, expert, expiry)>``. ``POST /v1/feedback``
  accepts a rating with the API key, or with a token that matches the request id and the expert and has
  not expired — so request ids alone (which anyone can see or guess) cannot move routing. The secret is
  derived from ``QSEF_API_KEY`` when one is set, else it is a random per-home secret file (mode 0600).
* :class:`RateLimiter` — a token bucket per client host; an empty bucket is a 429 with ``Retry-After``.
* :class:`ConcurrencyLimit` — at most ``limit`` routes run and ``queue`` wait; beyond that a 503 with
  ``Retry-After`` (the in-process models serve one request at a time, so an unbounded queue only
  turns into timeouts).

Example:
    >>> signer = FeedbackSigner(b"secret", ttl_s=3600)
    >>> token, expires = signer.sign("r1", "law")
    >>> signer.verify(token, "r1", "law")
    True
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from api.errors import ApiError

__all__ = ["ConcurrencyLimit", "FeedbackSigner", "RateLimiter", "feedback_secret"]


def feedback_secret(api_key: str | None, secret_file: Path) -> bytes:
    """The HMAC key for feedback tokens: derived from the API key, else read from (or first written to)
    ``secret_file`` with mode 0600."""
    if api_key:
        return hashlib.sha256(b"qsef-feedback-token\x00" + api_key.encode()).digest()
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = secret_file.read_bytes()
        if len(data) < 32:
            raise ValueError(f"feedback secret {secret_file} is shorter than 32 bytes; delete it to make a new one") from None
        return data
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return secret_file.read_bytes()


class FeedbackSigner:
    """Signs and checks feedback tokens bound to ``(request_id, expert, expiry)``.

    Args:
        secret: the HMAC key (:func:`feedback_secret`).
        ttl_s: how long a token is valid.
    """

    def __init__(self, secret: bytes, *, ttl_s: float = 86_400.0):
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, request_id: str, expert: str, expiry: int) -> str:
        msg = f"{request_id}\n{expert}\n{expiry}".encode()
        return base64.urlsafe_b64encode(hmac.new(self._secret, msg, hashlib.sha256).digest()).decode().rstrip("=")

    def sign(self, request_id: str, expert: str, *, now: float | None = None) -> tuple[str, int]:
        """Returns ``(token, expiry unix time)``."""
        expiry = int((now or time.time()) + self.ttl_s)
        return f"v1.{expiry}.{self._mac(request_id, expert, expiry)}", expiry

    def verify(self, token: str, request_id: str, expert: str, *, now: float | None = None) -> bool:
        """Whether ``token`` was signed here for this request and expert and has not expired."""
        version, _, rest = token.partition(".")
        expiry_s, _, mac = rest.partition(".")
        if version != "v1" or not expiry_s.isdigit() or int(expiry_s) < (now or time.time()):
            return False
        return hmac.compare_digest(mac.encode(), self._mac(request_id, expert, int(expiry_s)).encode())


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``rate_per_s``.

    Args:
        rate_per_s: tokens added per second.
        burst: bucket size.
        max_keys: buckets kept (the least recently used are dropped beyond it).
    """

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 10_000):
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str, *, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)  # re-insert: most recent last
            while len(self._buckets) > self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
            return wait

    def check(self, key: str, what: str) -> None:
        """Raises:
        ApiError: 429 with ``Retry-After`` when ``key``'s bucket is empty.
        """
        wait = self.take(key)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise ApiError(429, "rate_limited", f"too many {what} from {key}: at most {self.burst:g} at once and "
                           f"{self.rate * 60:g} a minute; retry in {retry} s", headers={"Retry-After": str(retry)})


class ConcurrencyLimit:
    """At most ``limit`` holders at once and ``queue`` waiters; anyone beyond is refused with 503.

    Use ``async with limit.slot(): ...`` in a handler.
    """

    def __init__(self, limit: int, queue: int, *, retry_after_s: int = 1):
        self.limit, self.queue, self.retry_after_s = limit, queue, retry_after_s
        self._sem = asyncio.Semaphore(limit)
        self.waiting = 0
        self.active = 0

    def slot(self) -> _Slot:
        return _Slot(self)


class _Slot:
    def __init__(self, owner: ConcurrencyLimit):
        self.owner = owner

    async def __aenter__(self) -> None:
        o = self.owner
        if o.active + o.waiting >= o.limit + o.queue:
            raise ApiError(503, "server_busy", f"{o.active} requests are running and {o.waiting} waiting (limits "
                           f"{o.limit} and {o.queue}); retry in {o.retry_after_s} s",
                           headers={"Retry-After": str(o.retry_after_s)})
        o.waiting += 1
        try:
            await o._sem.acquire()
        finally:
            o.waiting -= 1
        o.active += 1

    async def __aexit__(self, *exc) -> None:
        self.owner.active -= 1
        self.owner._sem.release()
