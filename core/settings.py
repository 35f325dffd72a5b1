"""One settings object for the whole project.

Values come, in rising priority, from the defaults below, an optional TOML or YAML config file
(``$QSEF_CONFIG`` or ``$QSEF_HOME/config.toml``/``config.yaml``), and ``QSEF_*`` environment variables.

The faces (the ``qsef`` command line and the HTTP app factory) build it once and pass it down:
library code takes a ``settings`` argument and never reads a global, so two configurations can run
side by side in one process. The router and the HTTP service have their own sections
(:class:`RouterSettings`, ``QSEF_ROUTER_*``; :class:`ApiSettings`, ``QSEF_API_*``), fields of the one
object. Settings are frozen (and hashable, so caches can key on them); derive a variant with
``settings.model_copy(update={...})``.

Example:
    >>> from core.settings import Settings
    >>> s = Settings(home="/tmp/qsef-demo")
    >>> s.home                     # $QSEF_HOME, default ~/.local/share/qsef
    >>> s.path("models")           # a folder under the data directory, created on demand
    >>> s.router.expert_timeout_s  # QSEF_ROUTER_EXPERT_TIMEOUT_S
    120.0
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _default_home() -> Path:
    return Path(user_data_dir("qsef", appauthor=False))


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the optional config file (TOML or YAML); environment variables still win."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except Exception as exc:  # a broken config must say where it is
            raise ValueError(f"cannot parse config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
        return data


def config_file_path() -> Path | None:
    """The config file in use: ``$QSEF_CONFIG`` if set, else ``config.toml``/``config.yaml`` in the home."""
    explicit = os.environ.get("QSEF_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"QSEF_CONFIG points to {path}, which is not a file")
        return path
    home = Path(os.environ.get("QSEF_HOME") or _default_home())
    for name in ("config.toml", "config.yaml", "config.yml"):
        if (home / name).is_file():
            return home / name
    return None


class RouterSettings(BaseSettings):
    """Timeouts, retries and decomposition limits of the router (``QSEF_ROUTER_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="QSEF_ROUTER_", extra="ignore", frozen=True)

    llm_timeout_s: float = Field(120.0, gt=0, description="router-LLM HTTP timeout per call")
    llm_retries: int = Field(1, ge=0, le=10, description="extra router-LLM attempts on connection errors / 5xx")
    expert_timeout_s: float = Field(120.0, gt=0, description="per-expert answer budget before the next-best")
    max_fallbacks: int = Field(2, ge=0, le=10, description="replacement experts tried per selected expert")
    max_subtasks: int = Field(6, ge=1, le=16)
    decompose_max_tokens: int = Field(256, ge=16, le=2048)
    fast_path: bool = Field(True, description="skip the router LLM for single simple questions")
    clear_split: bool = Field(True, description="skip the router LLM when the clause splitter finds parts that are "
                                                "each clearly a request of their own (router.decompose."
                                                "is_clear_split); false: the LLM decides every multi-part split")
    decompose_labels: bool = Field(False, description="ask the router LLM for a domain label per sub-task (a hint "
                                                      "only: QSEF picks the domain; each label costs decoding time)")
    experts_on_server: Literal["auto", "always", "never"] = Field(
        "auto", description="hf experts on the router LLM's model: answered by its vLLM server (always), in process "
                            "(never), or auto = in process when local_precision is int8 (faster here: "
                            "benchmarks/compound_latency.py), else by the server")
    fallback_expert: str = Field("general", description="expert used under the TE threshold tau")
    seed_history: bool = Field(
        True, description="before feedback knows a text, C_model asks the labelled seed history (MMLU questions)"
    )
    seed_balance: bool = Field(
        True, description="the seed history weighs each past task by the inverse frequency of its domain, so "
                          "questions unlike every past task are not pulled toward its most frequent domain "
                          "(benchmarks/results/routing_transfer.json)"
    )
    graph_questions: bool = Field(
        False, description="the seed history also holds the everyday questions generated from the domain graphs' "
                           "concepts and corpora (qsef/data/graph_questions.jsonl, router/question_gen.py); "
                           "measured in benchmarks/results/routing_transfer_graphq*.json"
    )
    answer_history: bool = Field(
        True, description="C_model also asks the fleet's measured answer matrix (<data>/history/answers.npz, "
                          "written by benchmarks/answer_quality.py) for the experts it knows"
    )
    live_load: bool = Field(True, description="C_model reads the live load of experts on vLLM servers (/metrics)")
    load_ttl_s: float = Field(2.0, gt=0, le=300, description="how long one server's load sample is reused")
    load_waiting_threshold: int = Field(4, ge=1, description="waiting requests at which an expert is saturated "
                                                              "and its traffic goes to the next-best (flagged)")
    load_busy_requests: int = Field(8, ge=1, description="running + 2 x waiting requests that count as full load")


class ApiSettings(BaseSettings):
    """Limits and tuning of the HTTP service (``QSEF_API_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="QSEF_API_", extra="ignore", frozen=True)

    max_body_bytes: int = Field(256 * 1024, ge=1024, description="larger request bodies get 413")
    max_query_chars: int = Field(8000, ge=16, description="longest query / text accepted (422 beyond)")
    max_messages: int = Field(64, ge=1, description="most chat messages accepted")
    batch_window_ms: float = Field(5.0, ge=0, description="/v1/score micro-batch window; 0 = no batching")
    max_batch: int = Field(64, ge=1, description="most texts per encoder call")
    batch_concurrency: int = Field(2, ge=1, le=64, description="micro-batches scored at once (about one per core)")
    health_interval_s: float = Field(30.0, ge=0, description="seconds between expert health probes (remote: "
                                                             "GET /v1/models; local: weights readable); 0 = off")
    health_timeout_s: float = Field(2.0, gt=0, le=60, description="budget of one remote health check")
    warm: bool = Field(True, description="load the encoder and profiles at start-up")
    feedback_token_ttl_s: float = Field(86_400.0, gt=0, description="how long a feedback token stays valid")
    feedback_rate_per_min: float = Field(30.0, gt=0, description="ratings a minute per client host without the "
                                                                 "API key (token bucket; 429 beyond)")
    feedback_burst: int = Field(10, ge=1, description="ratings a client host may send at once without the API key")
    max_routes: int = Field(4, ge=1, description="/v1/route and chat requests running at once")
    max_queued_routes: int = Field(16, ge=0, description="requests waiting for a slot; 503 + Retry-After beyond")
    route_budget_s: float = Field(300.0, gt=0, le=3600, description="per-request budget of a route or chat "
                                                                    "request; generation is cancelled at the end")


class Settings(BaseSettings):
    """Project-wide settings; every field can be set as ``QSEF_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="QSEF_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=_default_home, description="data directory (models, graphs, registry)")
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads; 1 often beats 2 on a busy box")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    encoder_model: str = Field("minilm", description="sentence encoder (model-store name)")
    kg_distance: Literal["path", "lca", "embedding"] = Field(
        "path", description="D_kg variant: shortest path, is_a lowest common ancestor, or TransE embedding cosine")
    local_precision: Literal["int8", "fp32"] = Field(
        "int8", description="in-process causal LMs (router LLM, hf experts): int8 = dynamic per-channel int8 "
                            "quantisation of the Linear layers but the MLP down-projections (1.7x faster decoding "
                            "here, measured; answers can differ from fp32 and from one batch to the next); "
                            "fp32 = exact. LoRA experts always run fp32")
    local_engine: Literal["ctranslate2", "transformers"] = Field(
        "ctranslate2", description="what runs the in-process causal LMs at local_precision=int8: ctranslate2 = a "
                                   "CTranslate2 int8 copy converted once (perplexity and speed against transformers "
                                   "in benchmarks/local_precision.py), transformers = torch dynamic int8. fp32 and "
                                   "LoRA experts always run on transformers")
    llm_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)), ge=1, le=256,
                             description="intra-op threads of CTranslate2 where prompts are long: teacher capture, "
                                         "answer scoring (default: the cores, at most 4)")
    decode_threads: int | None = Field(
        None, ge=1, le=256, description="intra-op threads of a CTranslate2 model while it answers; unset: the faster "
                                        "of 1 and llm_threads, measured once per model and CPU (experts.ct2)")
    router_model: str = Field("qwen-0.5b", description="router LLM (model-store name)")
    expert_model: str = Field("qwen-0.5b", description="LLM behind the default domain experts")
    router_backend: Literal["vllm", "transformers", "none"] = Field(
        "vllm", description="vllm: the managed vLLM server (qsef serve starts it), in process while it is down")
    llm_host: str = "127.0.0.1"
    llm_port: int = Field(8011, ge=1, le=65535)
    llm_url: str | None = Field(None, description="OpenAI-compatible base URL of a router LLM already running")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: str | None = Field(None, description="key required by mutating API endpoints")
    database_url: str | None = Field(
        None, description="postgresql://USER:PASSWORD@HOST:PORT/DB: the registry and feedback live in this shared "
                          "database (several router workers, several hosts); unset: SQLite files in the data dir")
    router: RouterSettings = Field(default_factory=RouterSettings, description="router tuning (QSEF_ROUTER_*)")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP service limits (QSEF_API_*)")

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from core.db import check_database_url

        check_database_url(v)  # DatabaseConfigError (a ValueError) names the setting and the fix
        return v.strip()

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls), file_secret_settings

    def path(self, *parts: str) -> Path:
        """A folder under the data directory, created if missing."""
        p = self.home.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def confine(self, user_path: str | Path, *, under: str = "") -> Path:
        """Resolve a user-supplied path and refuse it unless it lies inside ``home/under``.

        Raises:
            ValueError: when the path escapes the data directory.
        """
        root = self.home.joinpath(under).resolve() if under else self.home
        p = Path(user_path)
        p = (p if p.is_absolute() else root / p).resolve()
        if p != root and root not in p.parents:
            raise ValueError(f"path {user_path!s} is outside the data directory {root}")
        return p


def configure_torch_threads(settings: Settings) -> None:
    """Apply ``torch_threads`` to torch (imports torch: call it only where torch is needed anyway)."""
    import torch

    torch.set_num_threads(settings.torch_threads)
