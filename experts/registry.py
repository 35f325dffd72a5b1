"""The expert registry: a small database of experts, their profiles, backends and health.

Embedded, it is a SQLite file in WAL mode, so the API server reads while a CLI adds or removes an
expert; with ``QSEF_DATABASE_URL`` it is a table in the shared PostgreSQL database, so every router
worker sees one registry (:mod:`core.db`). Its layout is versioned: :data:`MIGRATIONS` (SQLite) and
:data:`PG_MIGRATIONS` list the steps in order, so an old database is brought up to date when opened.

Changes made by another process: every read goes to the database, so scoring sees a new or removed
expert at its next request; :meth:`ExpertRegistry.version` is a counter bumped by each change, which
the HTTP app polls once per health interval to refresh what it derives from the registry (the
domain labels offered to the router LLM).

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
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core.db import Database
from core.domains import DOMAIN_DESCRIPTIONS, DOMAINS, valid_domain_name
from experts.backends import SHIPPED_PREFIX, backend_resolver

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "CAPABILITY_MODELS",
    "DOMAIN_PROMPTS",
    "MIGRATIONS",
    "PG_MIGRATIONS",
    "DamagedExpertError",
    "ExpertError",
    "ExpertExistsError",
    "ExpertNotFoundError",
    "ExpertRegistry",
    "ExpertSpec",
    "InvalidExpertError",
    "capability_fleet",
    "default_fleet",
    "registry_from_settings",
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


class DamagedExpertError(ExpertError, ValueError):
    """A stored registry row cannot be read back as an expert (broken JSON, a value that no longer
    validates); :meth:`ExpertRegistry.list` skips such rows and :meth:`ExpertRegistry.damaged` names them."""


MAX_SIZE_PARAMS = 2**63 - 1  # SQLite's INTEGER is a signed 64-bit value
MAX_COST = 1e12
MAX_PROFILE_TEXTS = 10_000
MAX_TIMEOUT_S = 3600.0
# backend_kwargs keys with a fixed type, per backend; other keys are kept as given (backends ignore them)
_STR_KWARGS: dict[str, tuple[str, ...]] = {
    "hf": ("model", "path"),
    "openai": ("base_url", "model", "api_key_env"),
    "qrh": ("checkpoint", "tokenizer"),
    "peft": ("base", "adapter", "path"),
}
# backend_kwargs that name a file or folder: confined to the data directory when the registry has a root
PATH_KWARGS: dict[str, tuple[str, ...]] = {"hf": ("path",), "qrh": ("checkpoint", "tokenizer"), "openai": (),
                                           "peft": ("adapter", "path")}


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check_backend_kwargs(backend: str, kw: dict[str, Any]) -> None:
    """Raises ValueError naming the key and the rule (the server would otherwise fail on first use)."""
    for key in _STR_KWARGS.get(backend, ()):
        if key in kw and (not isinstance(kw[key], str) or not kw[key].strip()):
            raise ValueError(f"backend_kwargs.{key} must be a non-empty string for the {backend} backend")
    if "timeout" in kw and not (_positive_number(kw["timeout"]) and kw["timeout"] <= MAX_TIMEOUT_S):
        raise ValueError(f"backend_kwargs.timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], "
                         f"got {kw['timeout']!r}")
    if "retries" in kw and not (isinstance(kw["retries"], int) and not isinstance(kw["retries"], bool)
                                and 0 <= kw["retries"] <= 10):
        raise ValueError(f"backend_kwargs.retries must be an integer in [0, 10], got {kw['retries']!r}")
    url = kw.get("base_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        raise ValueError(f"backend_kwargs.base_url must start with http:// or https://, got {url!r}")


def _is_path_like(value: str) -> bool:
    """A tokenizer may be a model-store name (``qwen-0.5b``) or a folder; only a folder is a path."""
    return "/" in value or "\\" in value or value.startswith((".", "~"))


class ExpertSpec(BaseModel):
    """One expert: what it knows (domain, profile), how to call it (backend) and what it costs.

    ``backend_kwargs`` depend on ``backend``: ``hf`` takes ``model`` (a model-store name) or ``path``
    (a local HF causal-LM folder); ``openai`` takes ``base_url`` and ``model`` (and optional
    ``api_key_env``); ``qrh`` takes ``checkpoint`` (a safetensors file or folder); ``peft`` takes
    ``adapter`` (a LoRA adapter folder, or ``shipped:<domain>`` for one installed with the package) and
    ``base`` (the base model's store name). ``metrics`` holds what the expert was measured at (for
    distilled experts: ``heldout_ppl``, ``base_heldout_ppl`` on the same held-out windows, ``tokens_seen``).
    """

    name: str
    domain: str
    description: str = ""
    backend: str = Field("hf", description="a name in experts.backends.backend_resolver",
                         json_schema_extra={"enum": backend_resolver.options})
    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str = ""
    size_params: int = Field(0, ge=0, le=MAX_SIZE_PARAMS, description="parameter count, used by C_model")
    cost: float = Field(1.0, ge=0, le=MAX_COST, allow_inf_nan=False,
                        description="relative cost per call, used by cost-aware selection")
    enabled: bool = True
    profile: dict[str, Any] = Field(default_factory=dict, description="QSEF profile data (texts, anchors…)")
    metrics: dict[str, Any] = Field(default_factory=dict, description="measured quality, e.g. heldout_ppl, "
                                    "base_heldout_ppl, tokens_seen")
    health: Literal["unknown", "ok", "down"] = "unknown"
    health_detail: str = ""
    health_at: float | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("name must be 1-64 chars of lowercase letters, digits, '_', '-', '.'")
        return v

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return backend_resolver.canonical_name(v)  # UnknownComponentError (a ValueError) lists the names

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, v: str) -> str:
        v = v.strip().lower()
        if not valid_domain_name(v):  # the domain names cache files and metrics labels
            raise ValueError("domain must be 1-64 chars of lowercase letters, digits, '_' or '-', "
                             "starting with a letter or digit")
        return v

    @field_validator("backend_kwargs")
    @classmethod
    def _valid_backend_kwargs(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        backend = info.data.get("backend")
        if backend is not None:
            _check_backend_kwargs(backend, v)
        return v

    @field_validator("profile")
    @classmethod
    def _valid_profile(cls, v: dict[str, Any]) -> dict[str, Any]:
        folder = v.get("dir")
        if folder is not None and (not isinstance(folder, str) or not folder.strip()):
            raise ValueError("profile.dir must be a non-empty string: the folder of a saved QSEF profile")
        texts = v.get("texts")
        if texts is not None:
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError("profile.texts must be a non-empty list of non-empty strings")
            if len(texts) > MAX_PROFILE_TEXTS:
                raise ValueError(f"profile.texts has {len(texts)} texts; the limit is {MAX_PROFILE_TEXTS}")
        return v


def shipped_adapters() -> list[ExpertSpec]:
    """The LoRA domain experts installed with the package (``experts/data/adapters/<domain>/``, built by
    ``benchmarks/distill_lora.py``): one ``<domain>-lora`` expert each, its metrics from ``meta.json``.

    They are registered **disabled**: their held-out perplexity is 0.80-0.855x the base's on 4 k in-domain tokens
    (the shipped seed; 0.80-0.851x on the mean of three seeds of each recipe, every seed below its base; law, code,
    finance and general taught by Qwen2.5-Coder-1.5B, medicine by the base itself; each adapter lowest on its own
    domain except law, ``benchmarks/reports/distill_lora_cross.md``), but their
    multiple-choice answers are no better than the base's (graded MMLU, ``benchmarks/reports/distill_mc.md``:
    -2.5 to +3.8 pts, none significant), so they do not change default routing until a user turns one on
    (``qsef experts enable code-lora``). These run in process (backend ``peft``); ``experts/data/fleets/lora.yaml``
    serves the same adapters from one vLLM engine (multi-LoRA)."""
    from experts.backends import SHIPPED_ADAPTERS, SHIPPED_PREFIX

    specs = []
    for d in DOMAINS:
        folder = SHIPPED_ADAPTERS / d
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            continue  # not shipped (or unreadable): the plain expert of that domain remains
        if not (folder / "adapter_model.safetensors").is_file():
            continue
        m = meta.get("metrics") or {}
        specs.append(ExpertSpec(
            name=f"{d}-lora", domain=d, backend="peft",
            description=DOMAIN_DESCRIPTIONS[d],  # the router LLM reads descriptions as domain labels
            backend_kwargs={"adapter": f"{SHIPPED_PREFIX}{d}", "base": meta.get("base", "qwen-0.5b")},
            system_prompt=DOMAIN_PROMPTS[d], size_params=int(meta.get("params") or 0), cost=1.0,
            metrics={k: m[k] for k in ("heldout_ppl", "base_heldout_ppl", "ppl_ratio_to_base", "tokens_seen",
                                       "heldout_tokens") if k in m}, enabled=False))
    return specs


def default_fleet(model: str = "qwen-0.5b", size_params: int = 494_000_000) -> list[ExpertSpec]:
    """The experts that ship by default: five domain experts on one shared local model (a domain system
    prompt each), plus the shipped LoRA adapters on that model (:func:`shipped_adapters`)."""
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
    ] + [a for a in shipped_adapters() if a.backend_kwargs.get("base") == model]


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


# Each migration moves the schema from version i to i+1; never edit one that has shipped. MIGRATIONS are
# SQLite's scripts; PG_MIGRATIONS give the same layout on PostgreSQL, step for step (8-byte floats, BIGINT).
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
    # 'seeded' records that the default fleet was offered once, so a registry emptied on purpose stays empty
    """
    CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO registry_meta (key, value) SELECT 'seeded', 'migrated' WHERE EXISTS (SELECT 1 FROM experts);
    """,
    # a change counter, bumped in the transaction of every add / update / remove (not health): other
    # workers poll it (ExpertRegistry.version) to notice a change made through another process
    """
    CREATE TABLE registry_version (v INTEGER NOT NULL);
    INSERT INTO registry_version (v) VALUES (0);
    """,
    # measured quality of a built expert (held-out perplexity, its base's, tokens seen): ExpertSpec.metrics
    "ALTER TABLE experts ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}';",
]

PG_MIGRATIONS: list[str] = [
    """
    CREATE TABLE experts (
        name TEXT PRIMARY KEY,
        domain TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL,
        backend_kwargs TEXT NOT NULL DEFAULT '{}',
        system_prompt TEXT NOT NULL DEFAULT '',
        size_params BIGINT NOT NULL DEFAULT 0,
        cost DOUBLE PRECISION NOT NULL DEFAULT 1.0,
        enabled INTEGER NOT NULL DEFAULT 1,
        profile TEXT NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )
    """,
    """
    ALTER TABLE experts ADD COLUMN health TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE experts ADD COLUMN health_detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE experts ADD COLUMN health_at DOUBLE PRECISION;
    CREATE INDEX experts_domain ON experts(domain)
    """,
    """
    CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO registry_meta (key, value) SELECT 'seeded', 'migrated' WHERE EXISTS (SELECT 1 FROM experts)
    """,
    """
    CREATE TABLE registry_version (v BIGINT NOT NULL);
    INSERT INTO registry_version (v) VALUES (0)
    """,
    "ALTER TABLE experts ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'",
]

_JSON_FIELDS = ("backend_kwargs", "profile", "metrics")
_BUMP = "UPDATE registry_version SET v = v + 1"


def _row_values(spec: ExpertSpec) -> dict[str, Any]:
    """``spec`` as column values (JSON text for the dict fields, 0/1 for ``enabled``)."""
    values = spec.model_dump()
    for f in _JSON_FIELDS:
        values[f] = json.dumps(values[f], sort_keys=True)
    values["enabled"] = int(values["enabled"])
    return values


class ExpertRegistry:
    """Experts persisted in SQLite or PostgreSQL (:mod:`core.db`); safe to share between threads and
    between processes (every change is one transaction; see :meth:`version`).

    A row that cannot be read back (broken JSON, a value that no longer validates) never breaks a
    listing: :meth:`list` skips it with a warning, :meth:`damaged` names it with the reason, :meth:`get`
    raises :class:`DamagedExpertError`, and :meth:`remove` deletes it like any other row.

    Args:
        target: a SQLite file (created with its folder on first use), a ``postgresql://`` URL, or a
            :class:`core.db.Database`.
        confine: ``user_path -> resolved path`` that raises ``ValueError`` outside the data directory
            (``Settings.confine``); applied to ``profile.dir`` and the backends' path settings on
            :meth:`add` and :meth:`update`. ``None``: paths are stored as given (trusted callers).
    """

    def __init__(self, target: str | Path | Database, *, confine: Callable[[str], Path] | None = None):
        self.db = target if isinstance(target, Database) else Database(target)
        self.path = self.db.path  # None on PostgreSQL
        self.confine = confine
        self.db.migrate({"sqlite": MIGRATIONS, "postgresql": PG_MIGRATIONS}, store="registry", error=ExpertError)

    def describe(self) -> str:
        return self.db.describe()

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> int:
        return self.db.schema_version("registry")

    def version(self) -> int:
        """The change counter: it grows with every add, update and remove made by any process sharing
        this database (health marks do not count). Poll it to notice changes made elsewhere."""
        with self.db.transaction() as c:
            return int(c.execute(text("SELECT v FROM registry_version")).scalar_one())

    @staticmethod
    def _row_to_spec(row: Mapping[str, Any]) -> ExpertSpec:
        """Raises:
        DamagedExpertError: naming the row, the column and the problem.
        """
        data = {k: row[k] for k in row.keys() if k not in ("created_at", "updated_at")}  # noqa: SIM118
        for f in _JSON_FIELDS:
            try:
                data[f] = json.loads(data[f])
            except (TypeError, ValueError) as exc:
                raise DamagedExpertError(f"registry row {data.get('name')!r}: column {f} is not valid JSON "
                                         f"({exc}); remove the expert and add it again") from exc
        data["enabled"] = bool(data["enabled"])
        try:
            return ExpertSpec(**data)
        except (ValidationError, TypeError) as exc:
            raise DamagedExpertError(f"registry row {data.get('name')!r} does not validate: "
                                     f"{_one_line(exc)}; remove the expert and add it again") from exc

    def _check_paths(self, spec: ExpertSpec, parts: tuple[str, ...] = ("backend_kwargs", "profile")) -> ExpertSpec:
        """``spec`` with the user paths of ``parts`` resolved inside the data directory (when ``confine`` is set).

        Raises:
            InvalidExpertError: a path lies outside the data directory.
        """
        if self.confine is None:
            return spec
        kwargs, profile = dict(spec.backend_kwargs), dict(spec.profile)
        try:
            for key in PATH_KWARGS.get(spec.backend, ()) if "backend_kwargs" in parts else ():
                value = kwargs.get(key)
                if (isinstance(value, str) and (key != "tokenizer" or _is_path_like(value))
                        and not value.startswith(SHIPPED_PREFIX)):  # installed with the package: not a user path
                    kwargs[key] = str(self.confine(value))
            if "profile" in parts and isinstance(profile.get("dir"), str):
                profile["dir"] = str(self.confine(profile["dir"]))
        except ValueError as exc:
            raise InvalidExpertError(f"expert {spec.name!r}: {exc}") from exc
        return spec.model_copy(update={"backend_kwargs": kwargs, "profile": profile})

    def names(self) -> list[str]:
        with self.db.transaction() as c:
            return [r[0] for r in c.execute(text("SELECT name FROM experts ORDER BY name"))]

    def _read(self, sql: str, args: Mapping[str, Any] | None = None) -> tuple[list[ExpertSpec], dict[str, str]]:
        with self.db.transaction() as c:
            rows = c.execute(text(sql), dict(args or {})).mappings().all()
        specs, bad = [], {}
        for r in rows:
            try:
                specs.append(self._row_to_spec(r))
            except DamagedExpertError as exc:
                bad[r["name"]] = str(exc)
        return specs, bad

    def list(self, *, enabled_only: bool = False) -> list[ExpertSpec]:
        """All readable experts ordered by name (only enabled ones with ``enabled_only``); damaged rows
        are skipped with a warning (see :meth:`damaged`)."""
        sql = "SELECT * FROM experts" + (" WHERE enabled = 1" if enabled_only else "") + " ORDER BY name"
        specs, bad = self._read(sql)
        for name, why in bad.items():
            log.warning("skipping damaged registry row", extra={"expert": name, "error": why[:300]})
        return specs

    def damaged(self) -> dict[str, str]:
        """``{name: reason}`` of the rows that cannot be read back as experts."""
        return self._read("SELECT * FROM experts ORDER BY name")[1]

    def get(self, name: str) -> ExpertSpec:
        """Raises:
        ExpertNotFoundError: naming the registered experts.
        DamagedExpertError: the row exists but cannot be read (remove it and add it again).
        """
        with self.db.transaction() as c:
            row = c.execute(text("SELECT * FROM experts WHERE name = :n"), {"n": name}).mappings().first()
        if row is None:
            raise ExpertNotFoundError(name, self.names())
        return self._row_to_spec(row)

    def add(self, spec: ExpertSpec, *, replace: bool = False) -> ExpertSpec:
        """Register an expert.

        Raises:
            ExpertExistsError: when the name is taken and ``replace`` is false.
            InvalidExpertError: a path outside the data directory (see ``confine``).
        """
        spec = self._check_paths(spec)
        now = time.time()
        values = {**_row_values(spec), "created_at": now, "updated_at": now}
        cols = list(values)
        sql = f"INSERT INTO experts ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
        if replace:  # a replaced expert keeps its creation time
            sql += " ON CONFLICT (name) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in cols if c not in ("name", "created_at"))
        try:
            with self.db.transaction(write=True) as c:
                c.execute(text(sql), values)
                c.execute(text(_BUMP))
        except IntegrityError as exc:
            raise ExpertExistsError(f"expert {spec.name!r} already exists; remove it or update it") from exc
        return spec

    def remove(self, name: str) -> None:
        """Raises:
        ExpertNotFoundError: when no such expert is registered.
        """
        with self.db.transaction(write=True) as c:
            n = c.execute(text("DELETE FROM experts WHERE name = :n"), {"n": name}).rowcount
            if n:
                c.execute(text(_BUMP))
        if n == 0:
            raise ExpertNotFoundError(name, self.names())

    def update(self, name: str, /, **fields: Any) -> ExpertSpec:
        """Change some fields of an expert (validated like a new one). The read and the write are one
        transaction with the row locked, so two workers updating different fields at once keep both.

        Raises:
            ExpertNotFoundError, InvalidExpertError
        """
        if "name" in fields and fields["name"] != name:
            raise InvalidExpertError("an expert cannot be renamed; add a new one and remove the old")
        with self.db.transaction(write=True) as c:
            row = c.execute(text("SELECT * FROM experts WHERE name = :n" + self.db.for_update),
                            {"n": name}).mappings().first()
            if row is None:
                missing = True
            else:
                missing = False
                spec = self._updated(row, name, fields)
                values = _row_values(spec)
                values.pop("name")
                sets = ", ".join(f"{k} = :{k}" for k in values)
                c.execute(text(f"UPDATE experts SET {sets}, updated_at = :updated_at WHERE name = :name"),
                          {**values, "updated_at": time.time(), "name": name})
                c.execute(text(_BUMP))
        if missing:
            raise ExpertNotFoundError(name, self.names())
        return spec

    def _updated(self, row: Mapping[str, Any], name: str, fields: dict[str, Any]) -> ExpertSpec:
        """The stored expert ``row`` with ``fields`` changed, validated and path-checked."""
        current = self._row_to_spec(row).model_dump()
        unknown = set(fields) - set(current)
        if unknown:
            raise InvalidExpertError(f"unknown expert fields {sorted(unknown)}; allowed: {sorted(current)}")
        try:
            spec = ExpertSpec(**{**current, **fields})
        except ValidationError as exc:
            raise InvalidExpertError(_one_line(exc)) from exc
        return self._check_paths(spec, tuple(f for f in _JSON_FIELDS if f in fields))  # unchanged paths stay

    def set_health(self, name: str, status: Literal["ok", "down", "unknown"], detail: str = "") -> None:
        with self.db.transaction(write=True) as c:
            c.execute(text("UPDATE experts SET health = :s, health_detail = :d, health_at = :t WHERE name = :n"),
                      {"s": status, "d": detail[:500], "t": time.time(), "n": name})

    def ensure_default_fleet(self, model: str = "qwen-0.5b") -> list[ExpertSpec]:
        """Register the default experts the first time a registry is opened empty; returns the experts.
        Seeding is recorded, so a registry the user emptied on purpose stays empty. A shipped LoRA adapter
        (:func:`shipped_adapters`) that an already seeded registry has not been offered yet is added once
        (an upgrade brings the new experts; one the user removed stays removed)."""
        with self.db.transaction() as c:
            seeded = c.execute(text("SELECT value FROM registry_meta WHERE key = 'seeded'")).first() is not None
            offered = {r[0] for r in c.execute(text("SELECT key FROM registry_meta WHERE key LIKE 'offered:%'"))}
        fleet = default_fleet(model)
        if not seeded:
            if not self.names():
                for spec in fleet:
                    with contextlib.suppress(ExpertExistsError):  # a concurrent process seeded it first
                        self.add(spec)
            with self.db.transaction(write=True) as c:
                c.execute(text("INSERT INTO registry_meta (key, value) VALUES ('seeded', :v) "
                               "ON CONFLICT (key) DO NOTHING"), {"v": str(time.time())})
        # a shipped adapter newer than this registry's seeding is offered once too (removing it sticks)
        for spec in fleet:
            if spec.backend == "peft" and f"offered:{spec.name}" not in offered:
                if seeded and spec.name not in self.names():
                    with contextlib.suppress(ExpertExistsError):
                        self.add(spec)
                with self.db.transaction(write=True) as c:
                    c.execute(text("INSERT INTO registry_meta (key, value) VALUES (:k, :v) "
                                   "ON CONFLICT (key) DO NOTHING"), {"k": f"offered:{spec.name}", "v": str(time.time())})
        return self.list()


def registry_from_settings(settings: Settings, path: str | Path | None = None) -> ExpertRegistry:
    """The router's registry: ``path`` if given, else the shared database of ``settings.database_url``,
    else ``$QSEF_HOME/router/experts.sqlite``; user paths confined to the data directory."""
    target = path or settings.database_url or settings.path("router") / "experts.sqlite"
    return ExpertRegistry(target, confine=settings.confine)


def _one_line(exc: Exception) -> str:
    """A pydantic error as one line: ``field: problem; field: problem``."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc)
