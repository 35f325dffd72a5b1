"""One settings object for the whole project.

Values come, in rising priority, from the defaults below, an optional TOML or YAML config file
(``$QSEF_CONFIG`` or ``$QSEF_HOME/config.toml``/``config.yaml``), and ``QSEF_*`` environment variables.

Example:
    >>> from core.settings import get_settings
    >>> s = get_settings()
    >>> s.home                     # $QSEF_HOME, default ~/.local/share/qsef
    >>> s.path("models")           # a folder under the data directory, created on demand
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
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


class Settings(BaseSettings):
    """Project-wide settings; every field can be set as ``QSEF_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="QSEF_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="data directory (models, graphs, registry)")
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads; 1 often beats 2 on a busy box")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    encoder_model: str = Field("minilm", description="sentence encoder (model-store name)")
    kg_distance: Literal["path", "lca", "embedding"] = Field(
        "path", description="D_kg variant: shortest path, is_a lowest common ancestor, or TransE embedding cosine")
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing the env)."""
    return Settings()


def configure_torch_threads(settings: Settings | None = None) -> None:
    """Apply ``torch_threads`` to torch (imports torch: call it only where torch is needed anyway)."""
    import torch

    torch.set_num_threads((settings or get_settings()).torch_threads)
