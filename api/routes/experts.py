"""``/v1/experts``: list, show, add, update, remove experts at run time (mutations need the API key)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import ApiKeyDep, StateDep
from api.errors import ApiError
from api.schemas import ExpertCreate, ExpertPublic, ExpertUpdate
from experts.backends import BackendError, make_backend
from experts.registry import ExpertSpec, InvalidExpertError

router = APIRouter(prefix="/v1/experts", tags=["experts"])


@router.get("", response_model=list[ExpertPublic])
async def list_experts(state: StateDep) -> list[ExpertSpec]:
    return await run_in_threadpool(state.router.registry.list)


@router.get("/{name}", response_model=ExpertPublic)
async def get_expert(name: str, state: StateDep) -> ExpertSpec:
    return await run_in_threadpool(state.router.registry.get, name)


@router.post("", response_model=ExpertPublic, status_code=201, dependencies=[ApiKeyDep])
async def add_expert(body: ExpertCreate, state: StateDep) -> ExpertSpec:
    """Register an expert; its backend settings are checked before it is stored."""
    try:
        spec = ExpertSpec(**body.model_dump())
    except ValueError as exc:
        raise ApiError(422, "invalid_expert", _one_line(exc)) from exc
    _check_backend(spec)
    spec = await run_in_threadpool(state.router.registry.add, spec)
    state.router.refresh_domains()
    return spec


def _one_line(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors())
    return str(exc)


def _check_backend(spec: ExpertSpec) -> None:
    """Raises ApiError 422 when the backend cannot be built from the spec's settings."""
    try:
        make_backend(spec)
    except (BackendError, ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_expert", f"backend_kwargs: settings rejected by the {spec.backend} "
                                              f"backend: {exc}") from exc


@router.patch("/{name}", response_model=ExpertPublic, dependencies=[ApiKeyDep])
async def update_expert(name: str, body: ExpertUpdate, state: StateDep) -> ExpertSpec:
    changes = body.model_dump(exclude_none=True)
    current = await run_in_threadpool(state.router.registry.get, name)
    try:
        candidate = ExpertSpec(**{**current.model_dump(), **changes})
    except ValueError as exc:
        raise InvalidExpertError(_one_line(exc)) from exc
    _check_backend(candidate)  # PATCH is checked like POST, not stored unchecked
    spec = await run_in_threadpool(lambda: state.router.registry.update(name, **changes))
    state.router.dispatcher.forget(name)
    state.router.refresh_domains()
    return spec


@router.delete("/{name}", status_code=204, dependencies=[ApiKeyDep])
async def remove_expert(name: str, state: StateDep) -> Response:
    await run_in_threadpool(state.router.registry.remove, name)
    state.router.dispatcher.forget(name)
    state.router.refresh_domains()
    return Response(status_code=204)
