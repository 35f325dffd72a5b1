"""Request and response bodies (``XCreate`` in, ``XPublic`` out). Limits are enforced here, so a bad
body is a 422 that names the field and the rule."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experts.backends import backend_resolver
from experts.registry import MAX_COST, MAX_SIZE_PARAMS, ExpertSpec
from qsef.scores import ExpertScore, TextScores
from router.pipeline import RouteOptions, RouteResult

MAX_QUERY_CHARS = 8000  # overridden per app by settings.api.max_query_chars (checked in the handlers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RouteCreate(_Strict):
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="the user's (compound) query")
    options: RouteOptions = Field(default_factory=RouteOptions)


class FeedbackTokenPublic(BaseModel):
    expert: str
    token: str = Field(..., description="send it with POST /v1/feedback (with this request_id and expert)")
    expires_at: int = Field(..., description="Unix time after which the token is refused")


class RoutePublic(RouteResult):
    feedback_tokens: list[FeedbackTokenPublic] = Field(
        default_factory=list, description="one per answering expert: rating this answer needs one (or the API key)")


class ScoreCreate(_Strict):
    text: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)


#: One expert's QSEF breakdown, P included: the engine's own typed model, not a copy of it.
ExpertScorePublic = ExpertScore


class ScorePublic(TextScores):
    """:class:`qsef.scores.TextScores` plus how many texts shared the encoder call."""

    batch_size: int = Field(1, description="texts scored in the same encoder call")

    @classmethod
    def of(cls, scores: TextScores, *, batch_size: int) -> ScorePublic:
        """The response for one text's scores (the typed experts are reused as they are)."""
        return cls(**dict(scores), batch_size=batch_size)


class ExpertCreate(_Strict):
    name: str = Field(..., min_length=1, max_length=64)
    domain: str = Field(..., min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    backend: str = Field("hf", json_schema_extra={"enum": backend_resolver.options})
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = Field("", max_length=4000)
    size_params: int = Field(0, ge=0, le=MAX_SIZE_PARAMS)
    cost: float = Field(1.0, ge=0, le=MAX_COST, allow_inf_nan=False)
    enabled: bool = True
    profile: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return backend_resolver.canonical_name(v)  # the error names the registered backends


class ExpertUpdate(_Strict):
    domain: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = Field(None, max_length=2000)
    backend_kwargs: dict[str, Any] | None = None
    system_prompt: str | None = Field(None, max_length=4000)
    size_params: int | None = Field(None, ge=0, le=MAX_SIZE_PARAMS)
    cost: float | None = Field(None, ge=0, le=MAX_COST, allow_inf_nan=False)
    enabled: bool | None = None
    profile: dict[str, Any] | None = None


class ExpertPublic(ExpertSpec):
    pass


class FeedbackCreate(_Strict):
    request_id: str = Field(..., min_length=1, max_length=64)
    rating: float | None = Field(None, ge=0, le=1, description="1 = correct/helpful, 0 = wrong")
    correct: bool | None = Field(None, description="shorthand for rating 1 or 0")
    subtask_index: int | None = Field(None, ge=0, le=64)
    expert: str | None = Field(None, max_length=64, description="the expert rated (required with a token)")
    comment: str = Field("", max_length=2000)
    token: str | None = Field(None, min_length=1, max_length=200,
                              description="feedback token from /v1/route (feedback_tokens); not needed with the API key")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="or the Idempotency-Key header: a retry with the same key "
                                                    "answers the first result and stores nothing twice")

    @field_validator("correct")
    @classmethod
    def _one_of(cls, v, info):
        if v is not None and info.data.get("rating") is not None:
            raise ValueError("give either rating or correct, not both")
        return v

    def value(self) -> float:
        if self.rating is not None:
            return self.rating
        if self.correct is not None:
            return 1.0 if self.correct else 0.0
        raise ValueError("give rating (0..1) or correct (true/false)")


class FeedbackPublic(BaseModel):
    request_id: str
    rated: int


class ChatContentPart(BaseModel):
    """One part of an OpenAI content list; only ``text`` parts are read (images etc. are ignored)."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(..., max_length=64)
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ChatContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use
    model: str = Field("qsef-router", max_length=128)
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False


class ChatChoice(BaseModel):
    index: int = 0
    message: dict[str, Any]
    finish_reason: str = "stop"


class ChatCompletionPublic(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: dict[str, int]
    qsef: RouteResult | None = Field(None, description="routing details (ignored by OpenAI clients)")
    feedback_tokens: list[FeedbackTokenPublic] | None = Field(None, description="see RoutePublic.feedback_tokens")


class ExpertHealthPublic(BaseModel):
    name: str
    health: Literal["unknown", "ok", "down"]
    detail: str = ""
    checked_at: float | None = Field(None, description="Unix time of the last probe or call outcome")


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    reasons: list[str] = Field(default_factory=list, description="why the status is degraded")
    experts: int
    experts_down: list[str]
    router_llm: str
    router_llm_fallback: bool = Field(False, description="the vLLM server is unreachable: the model runs in process")
    score_batching: bool
    health_probe_interval_s: float = Field(0.0, description="seconds between expert health probes; 0 = off")
    health_prober: bool = Field(False, description="this worker runs the host's health probe (one per host)")
    worker_pid: int = Field(0, description="process id of the worker that answered")
    store: str = Field("", description="where the registry and feedback live (SQLite file or PostgreSQL, "
                                       "password hidden)")
    expert_health: list[ExpertHealthPublic] = Field(default_factory=list, description="every enabled expert")


class ErrorDetailPublic(BaseModel):
    model_config = ConfigDict(extra="allow")  # validation errors add ``details``: [{field, problem}]
    type: str
    message: str = Field(..., description="what was wrong and what is allowed")


class ErrorPublic(BaseModel):
    error: ErrorDetailPublic
    request_id: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic, "description": why} for code, why in {
        400: "the body is not valid JSON", 401: "API key or feedback token missing or wrong",
        403: "mutations disabled, or a feedback token that does not match", 404: "no such resource",
        409: "conflict (exists, damaged, already rated, no experts)", 413: "body too large",
        422: "a value breaks a rule (the message names the field)", 429: "rate limited (see Retry-After)",
        502: "an expert failed", 503: "too many requests running (see Retry-After)",
        504: "the request budget ran out",
    }.items()
}
"""Error statuses every operation may answer, all with the :class:`ErrorPublic` body (in the OpenAPI document)."""
