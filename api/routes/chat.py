"""``POST /v1/chat/completions``: the routed answer as an OpenAI chat completion (``GET /v1/models`` too).

The last user message is routed; earlier turns are passed to the experts as history. With
``stream: true`` the answer comes back as server-sent ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import RequestIdDep, StateDep
from api.errors import ApiError
from api.routes.route import check_length, feedback_tokens, run_route
from api.schemas import ChatChoice, ChatCompletionCreate, ChatCompletionPublic
from router.pipeline import RouteOptions

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
    result = await run_route(request, state, lambda cancel: state.router.route(query, opts, request_id=rid,
                                                                               history=history, cancel=cancel))
    state.metrics.observe_route(result)
    answer = result.answer
    prompt_tokens = sum(len(m.text().split()) for m in body.messages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(answer.split()),
             "total_tokens": prompt_tokens + len(answer.split())}
    cid = f"chatcmpl-{rid}"
    if body.stream:
        return StreamingResponse(_stream(cid, body.model, answer), media_type="text/event-stream")
    return ChatCompletionPublic(
        id=cid, model=body.model, usage=usage, qsef=result, feedback_tokens=feedback_tokens(state, result),
        choices=[ChatChoice(message={"role": "assistant", "content": answer})],
    )


async def _stream(cid: str, model: str, answer: str):
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> str:
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model, "choices": [{"index": 0, "delta": delta,
                                                                   "finish_reason": finish}]}) + "\n\n"

    yield chunk({"role": "assistant", "content": ""})
    words = answer.split(" ")
    for i in range(0, len(words), 8):  # a few words per event, as a model would stream them
        yield chunk({"content": " ".join(words[i:i + 8]) + (" " if i + 8 < len(words) else "")})
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"
