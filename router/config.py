"""Router tuning from ``QSEF_ROUTER_*`` environment variables (the
project-wide settings — router backend, model, URL, threads — stay in :mod:`core.settings`).

Example:
    $ QSEF_ROUTER_LLM_TIMEOUT_S=30 QSEF_ROUTER_EXPERT_TIMEOUT_S=20 qsef serve
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterConfig(BaseSettings):
    """Timeouts, retries and decomposition limits of the router."""

    model_config = SettingsConfigDict(env_prefix="QSEF_ROUTER_", extra="ignore")

    llm_timeout_s: float = Field(120.0, gt=0, description="router-LLM HTTP timeout per call")
    llm_retries: int = Field(1, ge=0, le=10, description="extra router-LLM attempts on connection errors / 5xx")
    expert_timeout_s: float = Field(120.0, gt=0, description="per-expert answer budget before the next-best")
    max_fallbacks: int = Field(2, ge=0, le=10, description="replacement experts tried per selected expert")
    max_subtasks: int = Field(6, ge=1, le=16)
    decompose_max_tokens: int = Field(256, ge=16, le=2048)
    fast_path: bool = Field(True, description="skip the router LLM for single simple questions")
    fallback_expert: str = Field("general", description="expert used under the TE threshold tau")
    seed_history: bool = Field(
        True, description="before feedback knows a text, C_model asks the labelled seed history (MMLU questions)"
    )
