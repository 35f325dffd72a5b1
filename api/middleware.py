"""ASGI middleware: request IDs, a body-size limit, structured access logs and Prometheus metrics.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched and
an oversized body is refused while it is being read, before any handler parses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Any

from api.metrics import Metrics

log = logging.getLogger("api.access")
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _TooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Assigns ``request.state.request_id`` (from ``X-Request-ID`` when valid; echoed, with the serving
    process id as ``X-QSEF-Worker``, on every response), enforces ``max_body_bytes``,
    logs one structured line per request and records request metrics."""

    def __init__(self, app: Any, *, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        rid = rid if _RID_RE.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        t0 = time.perf_counter()
        status = {"code": 500}
        route = scope.get("path", "")

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode()),
                                      (b"x-qsef-worker", str(os.getpid()).encode())]
            await send(message)

        async def reject(code: int, msg: str):
            body = json.dumps({"error": {"type": "request_too_large", "message": msg}, "request_id": rid}).encode()
            await send_wrapper({"type": "http.response.start", "status": code,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        limit = self.max_body_bytes
        too_large_msg = f"request body exceeds the limit of {limit} bytes"
        declared = headers.get("content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await reject(413, too_large_msg)
            elif declared is not None and declared.isdigit():
                await self.app(scope, receive, send_wrapper)  # the server enforces the declared length
            else:
                # No (valid) Content-Length: buffer up to the limit, then replay to the app.
                chunks: list[bytes] = []
                received = 0
                more = True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunks.append(message.get("body", b""))
                    received += len(chunks[-1])
                    more = message.get("more_body", False)
                    if received > limit:
                        raise _TooLarge
                body = b"".join(chunks)
                replayed = False

                async def replay():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
        except _TooLarge:
            await reject(413, too_large_msg)
        finally:
            elapsed = time.perf_counter() - t0
            route_tmpl = scope.get("route").path if scope.get("route") is not None else route
            self.metrics.observe_request(scope.get("method", ""), route_tmpl, status["code"], elapsed)
            log.info("request", extra={"request_id": rid, "method": scope.get("method"), "path": route,
                                       "status": status["code"], "latency_ms": round(elapsed * 1000, 2)})
