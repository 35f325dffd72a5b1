"""Request and response bodies (``XCreate`` in, ``XPublic`` out). Limits are enforced here, so a bad
body is a 422 that names the field and the rule."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experts.registry import ExpertSpec
from router.pipeline import RouteOptions, RouteResult

MAX_QUERY_CHARS = 8000  # overridden per app by settings.api.max_query_chars (checked in the handlers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RouteCreate(_Strict):
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="the user's (compound) query")
    options: RouteOptions = Field(default_factory=RouteOptions)


class RoutePublic(RouteResult):
    pass


class ScoreCreate(_Strict):
    text: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)


class ExpertScorePublic(BaseModel):
    expert: str
    domain: str
    D_emb: float | None
    D_kg: float | None
    D: float
    C_data: float | None
    C_model: float | None
    C_sparsity: float | None
    R: float
    TE: float
    P: float = Field(..., description="calibrated share TE / sum(TE) over the candidates: the scale-free confidence")
    rank: int


class ScorePublic(BaseModel):
    text: str
    experts: list[ExpertScorePublic]
    flags: list[str] = Field(default_factory=list)
    batch_size: int = Field(1, description="texts scored in the same encoder call")


class ExpertCreate(_Strict):
    name: str = Field(..., min_length=1, max_length=64)
    domain: str = Field(..., min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    backend: Literal["hf", "openai", "qrh"] = "hf"
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = Field("", max_length=4000)
    size_params: int = Field(0, ge=0)
    cost: float = Field(1.0, ge=0)
    enabled: bool = True
    profile: dict[str, Any] = Field(default_factory=dict)


class ExpertUpdate(_Strict):
    domain: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = Field(None, max_length=2000)
    backend_kwargs: dict[str, Any] | None = None
    system_prompt: str | None = Field(None, max_length=4000)
    size_params: int | None = Field(None, ge=0)
    cost: float | None = Field(None, ge=0)
    enabled: bool | None = None
    profile: dict[str, Any] | None = None


class ExpertPublic(ExpertSpec):
    pass


class FeedbackCreate(_Strict):
    request_id: str = Field(..., min_length=1, max_length=64)
    rating: float | None = Field(None, ge=0, le=1, description="1 = correct/helpful, 0 = wrong")
    correct: bool | None = Field(None, description="shorthand for rating 1 or 0")
    subtask_index: int | None = Field(None, ge=0, le=64)
    expert: str | None = Field(None, max_length=64)
    comment: str = Field("", max_length=2000)

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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(p.get("text", "") for p in self.content if isinstance(p, dict) and p.get("type") == "text")
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


class ExpertHealthPublic(BaseModel):
    name: str
    health: Literal["unknown", "ok", "down"]
    detail: str = ""
    checked_at: float | None = Field(None, description="Unix time of the last probe or call outcome")


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    experts: int
    experts_down: list[str]
    router_llm: str
    score_batching: bool
    health_probe_interval_s: float = Field(0.0, description="seconds between expert health probes; 0 = off")
    expert_health: list[ExpertHealthPublic] = Field(default_factory=list, description="every enabled expert")
