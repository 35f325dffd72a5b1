"""FastAPI dependencies as ``Annotated`` aliases; heavy objects come from the lifespan's :class:`AppState`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.qsef


def request_id(request: Request) -> str:
    return request.state.request_id


def _given_key(authorization: str | None, x_api_key: str | None) -> str | None:
    given = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
    return given or None


def has_api_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> bool:
    """Whether the request carries the configured API key (False when it carries none).

    Raises:
        ApiError: 401 when a key is given but wrong (or none is configured to compare it with).
    """
    given = _given_key(authorization, x_api_key)
    if given is None:
        return False
    expected = request.app.state.qsef.settings.api_key
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    return True


def require_api_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """Mutations need the key from settings (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""
    expected = request.app.state.qsef.settings.api_key
    if not expected:
        raise ApiError(403, "mutations_disabled",
                       "this server has no API key configured (set QSEF_API_KEY) so mutations are disabled")
    given = _given_key(authorization, x_api_key)
    if not given:
        raise ApiError(401, "missing_api_key", "this endpoint needs an API key: 'Authorization: Bearer KEY' or "
                                               "'X-API-Key: KEY'")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_api_key", "the API key is not valid")


StateDep = Annotated[AppState, Depends(get_state)]
RequestIdDep = Annotated[str, Depends(request_id)]
ApiKeyDep = Depends(require_api_key)
HasApiKeyDep = Annotated[bool, Depends(has_api_key)]
