"""The expert registry: a small SQLite database of experts, their profiles, backends and health.

The database runs in WAL mode so the API server can read while a CLI adds or removes an expert.
Its layout is versioned: ``schema_version`` holds the number of applied migrations and
:data:`MIGRATIONS` lists them in order, so an old database is brought up to date when opened.

Example:
    >>> reg = ExpertRegistry(tmp_path / "experts.sqlite")
    >>> reg.ensure_default_fleet()
    >>> [e.name for e in reg.list()]
    ['code', 'finance', 'general', 'law', 'medicine']
    >>> reg.update("law", cost=2.0)
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from core.db import connect, migrate
from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS

__all__ = [
    "CAPABILITY_MODELS",
    "DOMAIN_PROMPTS",
    "MIGRATIONS",
    "ExpertError",
    "ExpertExistsError",
    "ExpertNotFoundError",
    "ExpertRegistry",
    "ExpertSpec",
    "InvalidExpertError",
    "capability_fleet",
    "default_fleet",
]


DOMAIN_PROMPTS = {
    "medicine": "You are a careful medical expert. Answer clinical and biomedical questions accurately and "
    "concisely; mention when a clinician should be consulted.",
    "law": "You are a legal expert. Answer questions about law, contracts, courts, rights and licences "
    "precisely and concisely; note that this is not legal advice.",
    "code": "You are an expert software engineer. Answer programming questions with correct, idiomatic "
    "code and a short explanation.",
    "finance": "You are a finance and economics expert. Answer questions about accounting, markets, "
    "investing, taxes and economics accurately and concisely.",
    "general": "You are a knowledgeable general assistant. Answer general-knowledge questions about "
    "history, geography, science and culture accurately and concisely.",
}


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
BackendName = Literal["hf", "openai", "qrh"]


class ExpertError(Exception):
    """Base class of registry errors (mapped to 4xx at the HTTP edge)."""


class ExpertNotFoundError(ExpertError, KeyError):
    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        super().__init__(f"unknown expert {name!r}; registered experts: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ExpertExistsError(ExpertError):
    pass


class InvalidExpertError(ExpertError, ValueError):
    pass


class ExpertSpec(BaseModel):
    """One expert: what it knows (domain, profile), how to call it (backend) and what it costs.

    ``backend_kwargs`` depend on ``backend``: ``hf`` takes ``model`` (a model-store name) or ``path``
    (a local HF causal-LM folder); ``openai`` takes ``base_url`` and ``model`` (and optional
    ``api_key_env``); ``qrh`` takes ``checkpoint`` (a safetensors file or folder).
    """

    name: str
    domain: str
    description: str = ""
    backend: BackendName = "hf"
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = ""
    size_params: int = Field(0, ge=0, description="parameter count, used by C_model")
    cost: float = Field(1.0, ge=0, description="relative cost per call, used by cost-aware selection")
    enabled: bool = True
    profile: dict[str, Any] = Field(default_factory=dict, description="QSEF profile data (texts, anchors…)")
    health: Literal["unknown", "ok", "down"] = "unknown"
    health_detail: str = ""
    health_at: float | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("name must be 1-64 chars of lowercase letters, digits, '_', '-', '.'")
        return v

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, v: str) -> str:
        v = v.strip().lower()
        if not v or len(v) > 64:
            raise ValueError("domain must be a non-empty label of at most 64 characters")
        return v


def default_fleet(model: str = "qwen-0.5b", size_params: int = 494_000_000) -> list[ExpertSpec]:
    """The five domain experts that ship by default: one shared local model, a domain system prompt each."""
    return [
        ExpertSpec(
            name=d,
            domain=d,
            description=DOMAIN_DESCRIPTIONS[d],
            backend="hf",
            backend_kwargs={"model": model},
            system_prompt=DOMAIN_PROMPTS[d],
            size_params=size_params,
            cost=1.0,
        )
        for d in DOMAINS
    ]


CAPABILITY_MODELS: dict[str, int] = {
    "qwen-1.5b": 1_540_000_000,   # Qwen2.5-Coder-1.5B-Instruct: strong, slow
    "qwen-0.5b": 494_000_000,     # Qwen2.5-Coder-0.5B-Instruct
    "smollm2-135m": 135_000_000,  # SmolLM2-135M-Instruct: cheapest
}
"""The pinned models of the capability fleet and their parameter counts."""


def capability_fleet(costs: dict[str, float] | None = None, *, cost_unit: str = "params_b") -> list[ExpertSpec]:
    """A fleet whose experts differ in capability and cost: one general expert per pinned model.

    Args:
        costs: model -> measured cost (``benchmarks/answer_quality.py`` measures seconds per 100
            generated tokens on the machine, side by side in one run). Missing models cost their
            parameter count in billions (the documented fallback, ``cost_unit="params_b"``).
        cost_unit: recorded in each expert's profile, so readers know what ``cost`` means.

    The experts are (model, ``general`` role) pairs: a domain system prompt on the same model changes
    little of a multiple-choice answer, so the fleet varies the model, not the prompt.
    """
    costs = costs or {}
    return [
        ExpertSpec(
            name=m, domain="general", description=f"{m}: general assistant ({p / 1e9:.2f}B parameters)",
            backend="hf", backend_kwargs={"model": m}, system_prompt=DOMAIN_PROMPTS["general"],
            size_params=p, cost=float(costs.get(m, p / 1e9)),
            profile={"cost_unit": cost_unit if m in costs else "params_b"},
        )
        for m, p in CAPABILITY_MODELS.items()
    ]


# Each migration moves the schema from version i to i+1; never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE experts (
        name TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL,
        backend_kwargs TEXT NOT NULL DEFAULT '{}',
        system_prompt TEXT NOT NULL DEFAULT '',
        size_params INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 1.0,
        enabled INTEGER NOT NULL DEFAULT 1,
        profile TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE experts ADD COLUMN health TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE experts ADD COLUMN health_detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE experts ADD COLUMN health_at REAL;
    CREATE INDEX experts_domain ON experts(domain);
    """,
]

_JSON_FIELDS = ("backend_kwargs", "profile")


class ExpertRegistry:
    """Experts persisted in SQLite; safe to share between threads (one connection per operation).

    Args:
        path: the database file (created with its folder on first use).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            migrate(db, MIGRATIONS, what="registry", error=ExpertError)

    def _connect(self):
        return connect(self.path)

    def schema_version(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT version FROM schema_version").fetchone()[0]

    @staticmethod
    def _row_to_spec(row: sqlite3.Row) -> ExpertSpec:
        data = {k: row[k] for k in row.keys() if k not in ("created_at", "updated_at")}  # noqa: SIM118
        for f in _JSON_FIELDS:
            data[f] = json.loads(data[f])
        data["enabled"] = bool(data["enabled"])
        return ExpertSpec(**data)

    def names(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM experts ORDER BY name")]

    def list(self, *, enabled_only: bool = False) -> list[ExpertSpec]:
        """All experts ordered by name (only enabled ones with ``enabled_only``)."""
        sql = "SELECT * FROM experts" + (" WHERE enabled = 1" if enabled_only else "") + " ORDER BY name"
        with self._connect() as db:
            return [self._row_to_spec(r) for r in db.execute(sql)]

    def get(self, name: str) -> ExpertSpec:
        """Raises:
        ExpertNotFoundError: naming the registered experts.
        """
        with self._connect() as db:
            row = db.execute("SELECT * FROM experts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ExpertNotFoundError(name, self.names())
        return self._row_to_spec(row)

    def add(self, spec: ExpertSpec, *, replace: bool = False) -> ExpertSpec:
        """Register an expert.

        Raises:
            ExpertExistsError: when the name is taken and ``replace`` is false.
        """
        now = time.time()
        values = spec.model_dump()
        for f in _JSON_FIELDS:
            values[f] = json.dumps(values[f], sort_keys=True)
        values["enabled"] = int(values["enabled"])
        cols = [*values, "created_at", "updated_at"]
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        sql = f"{verb} INTO experts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._lock, self._connect() as db:
            try:
                db.execute(sql, [*values.values(), now, now])
            except sqlite3.IntegrityError as exc:
                raise ExpertExistsError(f"expert {spec.name!r} already exists; remove it or update it") from exc
        return spec

    def remove(self, name: str) -> None:
        """Raises:
        ExpertNotFoundError: when no such expert is registered.
        """
        with self._lock, self._connect() as db:
            cur = db.execute("DELETE FROM experts WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise ExpertNotFoundError(name, self.names())

    def update(self, name: str, /, **fields: Any) -> ExpertSpec:
        """Change some fields of an expert (validated like a new one).

        Raises:
            ExpertNotFoundError, InvalidExpertError
        """
        if "name" in fields and fields["name"] != name:
            raise InvalidExpertError("an expert cannot be renamed; add a new one and remove the old")
        current = self.get(name).model_dump()
        unknown = set(fields) - set(current)
        if unknown:
            raise InvalidExpertError(f"unknown expert fields {sorted(unknown)}; allowed: {sorted(current)}")
        try:
            spec = ExpertSpec(**{**current, **fields})
        except ValidationError as exc:
            raise InvalidExpertError(str(exc)) from exc
        values = spec.model_dump()
        for f in _JSON_FIELDS:
            values[f] = json.dumps(values[f], sort_keys=True)
        values["enabled"] = int(values["enabled"])
        values.pop("name")
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock, self._connect() as db:
            db.execute(
                f"UPDATE experts SET {sets}, updated_at = ? WHERE name = ?", [*values.values(), time.time(), name]
            )
        return spec

    def set_health(self, name: str, status: Literal["ok", "down", "unknown"], detail: str = "") -> None:
        with self._lock, self._connect() as db:
            db.execute(
                "UPDATE experts SET health = ?, health_detail = ?, health_at = ? WHERE name = ?",
                (status, detail[:500], time.time(), name),
            )

    def ensure_default_fleet(self, model: str = "qwen-0.5b") -> list[ExpertSpec]:
        """Register the default five domain experts when the registry is empty; returns the experts."""
        if not self.names():
            for spec in default_fleet(model):
                with contextlib.suppress(ExpertExistsError):  # a concurrent process seeded it first
                    self.add(spec)
        return self.list()
