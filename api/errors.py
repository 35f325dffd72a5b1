"""Domain exceptions -> HTTP errors, in one place. Every error body has the same shape::

    {"error": {"type": "...", "message": "what was wrong and what is allowed"}, "request_id": "..."}

(the shape of OpenAI's errors, so OpenAI clients show the message).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.db import DatabaseUnavailableError
from experts.backends import BackendError
from experts.registry import DamagedExpertError, ExpertExistsError, ExpertNotFoundError, InvalidExpertError
from router.feedback import FeedbackAlreadyRatedError, FeedbackKeyReusedError, FeedbackNotFoundError
from router.scoring import NoExpertsError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error raised at the edge with its status and type (and headers, e.g. ``Retry-After``)."""

    def __init__(self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers


def error_response(request: Request, status: int, type_: str, message: str, *,
                   headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """The one error body. ``X-Request-ID`` is added by the middleware to every response, not here."""
    rid = getattr(request.state, "request_id", None)
    body = {"error": {"type": type_, "message": message, **extra}, "request_id": rid}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict]]:
    details = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        details.append({"field": loc, "problem": e.get("msg", "invalid")})
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return "request body is not valid JSON", details
    return "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5]), details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.type, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, details = _validation_message(exc)
        status = 400 if message == "request body is not valid JSON" else 422
        return error_response(request, status, "invalid_request_error", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no endpoint {request.method} {request.url.path}; see /docs"
        if exc.status_code == 405:
            msg = f"method {request.method} not allowed on {request.url.path}; see /docs"
        return error_response(request, exc.status_code, "http_error", msg, headers=getattr(exc, "headers", None))

    @app.exception_handler(ExpertNotFoundError)
    async def _expert_nf(request: Request, exc: ExpertNotFoundError):
        return error_response(request, 404, "expert_not_found", str(exc))

    @app.exception_handler(ExpertExistsError)
    async def _expert_exists(request: Request, exc: ExpertExistsError):
        return error_response(request, 409, "expert_exists", str(exc))

    @app.exception_handler(InvalidExpertError)
    async def _expert_invalid(request: Request, exc: InvalidExpertError):
        return error_response(request, 422, "invalid_expert", str(exc))

    @app.exception_handler(DamagedExpertError)
    async def _expert_damaged(request: Request, exc: DamagedExpertError):
        return error_response(request, 409, "expert_damaged", str(exc))

    @app.exception_handler(FeedbackAlreadyRatedError)
    async def _fb_rated(request: Request, exc: FeedbackAlreadyRatedError):
        return error_response(request, 409, "already_rated", str(exc))

    @app.exception_handler(FeedbackNotFoundError)
    async def _fb_nf(request: Request, exc: FeedbackNotFoundError):
        return error_response(request, 404, "request_not_found", str(exc))

    @app.exception_handler(FeedbackKeyReusedError)
    async def _fb_key(request: Request, exc: FeedbackKeyReusedError):
        return error_response(request, 422, "idempotency_key_reused", str(exc))

    @app.exception_handler(DatabaseUnavailableError)
    async def _db_down(request: Request, exc: DatabaseUnavailableError):
        # nothing of the failed transaction was written: the client may retry (ratings with their key)
        log.warning("database unavailable", extra={"request_id": getattr(request.state, "request_id", None),
                                                   "error": exc.reason[:300]})
        return error_response(request, 503, "database_unavailable",
                              f"the shared store is unavailable ({exc.reason[:200]}); nothing was written, retry "
                              "shortly", headers={"Retry-After": "2"})

    @app.exception_handler(NoExpertsError)
    async def _no_experts(request: Request, exc: NoExpertsError):
        return error_response(request, 409, "no_experts", str(exc))

    @app.exception_handler(BackendError)
    async def _backend(request: Request, exc: BackendError):
        return error_response(request, 502, "expert_error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(request, 500, "internal_error", f"internal error ({type(exc).__name__}); see server log")
