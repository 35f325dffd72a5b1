"""``POST /v1/chat/completions``: the routed answer as an OpenAI chat completion (``GET /v1/models`` too).

The last user message is routed; earlier turns are passed to the experts as history. With
``stream: true`` the answer comes back as server-sent ``chat.completion.chunk`` events while the experts
generate it (:meth:`router.pipeline.Router.route_stream`, sub-task by sub-task); the last chunk, the one
with ``finish_reason``, carries the routing summary under ``qsef`` (the non-streamed response's field) and
``usage``. A client that disconnects stops the generation under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import RequestIdDep, StateDep
from api.errors import ApiError
from api.routes.route import check_length, feedback_tokens, run_route
from api.schemas import ChatChoice, ChatCompletionCreate, ChatCompletionPublic
from router.pipeline import RouteOptions, RouteResult, StreamDelta

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["chat"])
MODEL_NAMES = ("qsef-router", "qsef")


@router.get("/models")
async def list_models() -> dict:
    return {"object": "list", "data": [{"id": MODEL_NAMES[0], "object": "model", "created": 0, "owned_by": "qsef"}]}


@router.post("/chat/completions", response_model=ChatCompletionPublic, response_model_exclude_none=True)
async def chat_completions(body: ChatCompletionCreate, state: StateDep, rid: RequestIdDep, request: Request):
    if body.model not in MODEL_NAMES:
        raise ApiError(404, "model_not_found", f"model {body.model!r} does not exist; use one of {list(MODEL_NAMES)}")
    if len(body.messages) > state.settings.api.max_messages:
        raise ApiError(422, "invalid_request_error",
                       f"{len(body.messages)} messages; the limit is {state.settings.api.max_messages}")
    user_turns = [i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()]
    if not user_turns:
        raise ApiError(422, "invalid_request_error", "messages must contain a non-empty user message")
    last = user_turns[-1]
    query = body.messages[last].text().strip()
    check_length(query, state.settings.api.max_query_chars, "the last user message")
    history = [{"role": m.role if m.role in ("user", "assistant") else "system", "content": m.text()}
               for m in body.messages[:last] if m.role in ("user", "assistant")]
    max_tokens = body.max_completion_tokens or body.max_tokens or 128
    opts = RouteOptions(max_tokens=min(max_tokens, 2048))
    cid = f"chatcmpl-{rid}"
    prompt_tokens = sum(len(m.text().split()) for m in body.messages)
    if body.stream:
        cancel = threading.Event()
        events = state.router.route_stream(query, opts, request_id=rid, history=history, cancel=cancel)
        return StreamingResponse(_stream(cid, body.model, events, cancel, state, prompt_tokens),
                                 media_type="text/event-stream")
    result = await run_route(request, state, lambda cancel: state.router.route(query, opts, request_id=rid,
                                                                               history=history, cancel=cancel))
    state.metrics.observe_route(result)
    answer = result.answer
    return ChatCompletionPublic(
        id=cid, model=body.model, usage=_usage(prompt_tokens, answer), qsef=result,
        feedback_tokens=feedback_tokens(state, result),
        choices=[ChatChoice(message={"role": "assistant", "content": answer})],
    )


def _usage(prompt_tokens: int, answer: str) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.split()),
            "total_tokens": prompt_tokens + len(answer.split())}


async def _stream(cid: str, model: str, events: Iterator[StreamDelta | RouteResult], cancel: threading.Event,
                  state: Any, prompt_tokens: int) -> AsyncIterator[str]:
    """Server-sent chunks from the router's event iterator, which runs in a worker thread.

    When the client disconnects, Starlette cancels this generator; ``finally`` then sets ``cancel``, and
    the router stops the expert's generation within a decoding step (or closes the upstream stream).
    """
    created = int(time.time())
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        try:
            for event in events:
                put(event)
        except Exception as exc:  # surfaced to the client as an error event
            log.error("streamed route failed", extra={"error": str(exc)[:300]})
            put(exc)
        finally:
            put(end)

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model, "choices": [{"index": 0, "delta": delta,
                                                                   "finish_reason": finish}], **extra},
                                     default=str) + "\n\n"

    loop.run_in_executor(None, pump)
    try:
        yield chunk({"role": "assistant", "content": ""})
        while (event := await queue.get()) is not end:
            if isinstance(event, StreamDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, RouteResult):
                state.metrics.observe_route(event)
                tokens = [t.model_dump(mode="json") for t in feedback_tokens(state, event)]
                yield chunk({}, "stop", usage=_usage(prompt_tokens, event.answer), qsef=event.model_dump(mode="json"),
                            feedback_tokens=tokens)
            elif isinstance(event, Exception):
                yield "data: " + json.dumps({"error": {"message": f"routing failed: {event}"[:500],
                                                       "type": "server_error", "code": "route_failed"}}) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # the client went away, or we are done: stop any generation under way
