"""An expert fleet on vLLM servers, described in one YAML file: ``qsef fleet up|down|status FLEET.yaml``.

The file lists servers; each either runs on this host (a model from the model store on a loopback
port, optionally with LoRA adapters — vLLM's multi-LoRA serving, one engine for the base model and
every adapter) or is a remote OpenAI-compatible server given by URL (started elsewhere: another
host's ``qsef fleet up``, the vLLM production stack, Ray Serve ...). Every server names the experts it
serves; ``up`` starts the local servers (the project's managed :class:`router.llm.server.VLLMServer`:
pid file, log, CPU flags) and registers each expert on the ``openai`` backend pointing at its server,
so the router dispatches to it and ``C_model`` reads its live load (:mod:`experts.load`). ``down``
stops the local servers and unregisters the fleet's experts; ``status`` reports each server's health,
live load and registered experts.

    servers:
      - name: small
        model: smollm2-135m          # model-store name (qsef models list)
        port: 8031
        lora: {law-lora: adapters/law}   # optional: served name -> adapter folder (in the data directory,
                                         # or shipped:<domain> for an adapter that ships with the package)
        experts:
          - {name: law-small, domain: law, model: law-lora}
          - {name: general-small, domain: general}       # model defaults to the base model
      - name: big-remote
        url: http://10.0.0.7:8000/v1
        model: qwen-1.5b             # the served model name there
        experts:
          - {name: finance-big, domain: finance, size_params: 1540000000}

``experts/data/fleets/lora.yaml`` serves the five shipped LoRA domain experts from one vLLM engine on
Qwen2.5-Coder-0.5B (the in-process alternative is the ``peft`` backend the registry's ``<domain>-lora``
experts use; which one answers is the expert's backend configuration). Greedy answers of the two agree
token for token (``tests/router/test_fleet.py``; ``benchmarks/lora_serving.py`` measures both).

Validation happens before anything starts: an unknown model, a missing adapter folder, a port taken
by another program, duplicate ports or expert names — one message naming the file, the entry and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.settings import Settings
from experts.load import LiveLoad
from experts.registry import (
    DOMAIN_DESCRIPTIONS,
    DOMAIN_PROMPTS,
    ExpertNotFoundError,
    ExpertRegistry,
    ExpertSpec,
)
from router.llm.server import VLLMServer, _port_free

log = logging.getLogger(__name__)

__all__ = ["Fleet", "FleetError", "FleetExpert", "FleetManager", "FleetServer", "load_fleet"]


class FleetError(ValueError):
    """A fleet file that cannot be used as it is (the message names the entry and the fix)."""


class FleetExpert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    domain: str
    model: str | None = Field(None, description="served model name: the base model (default) or a LoRA adapter")
    description: str | None = Field(None, description="default: the domain's description (read by the router LLM)")
    system_prompt: str | None = Field(None, description="default: the domain's system prompt, as the shipped experts "
                                      "have; \"\" for none")
    cost: float = 1.0
    size_params: int = Field(0, ge=0, description="parameter count, read by C_model's size term")
    profile: dict[str, Any] = Field(default_factory=dict)


class FleetServer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str = Field(..., description="local: a model-store name; remote: the served model name")
    port: int | None = Field(None, ge=1, le=65535, description="local server: loopback port")
    url: str | None = Field(None, description="remote server: its OpenAI-compatible base URL (…/v1)")
    max_model_len: int = Field(2048, ge=128)
    lora: dict[str, str] = Field(default_factory=dict, description="served adapter name -> adapter folder in the "
                                 "data directory, or shipped:<domain>")
    max_lora_rank: int = Field(16, ge=1, le=512)
    extra_args: list[str] = Field(default_factory=list, description="more vLLM api_server flags")
    experts: list[FleetExpert] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _local_or_remote(self) -> FleetServer:
        if (self.port is None) == (self.url is None):
            raise ValueError(f"server {self.name!r}: give either port (a server started on this host) or url "
                             "(a remote server), not both or neither")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"server {self.name!r}: url must start with http:// or https://, got {self.url!r}")
        if self.url is not None and self.lora:
            raise ValueError(f"server {self.name!r}: lora adapters are loaded by the server that runs them; "
                             "list them in that host's fleet file")
        served = {self.model, *self.lora}
        for e in self.experts:
            if e.model is not None and e.model not in served:
                raise ValueError(f"server {self.name!r}: expert {e.name!r} asks for model {e.model!r}, which this "
                                 f"server does not serve ({', '.join(sorted(served))})")
        return self

    @property
    def local(self) -> bool:
        return self.port is not None

    def base_url(self, host: str) -> str:
        return self.url.rstrip("/") if self.url else f"http://{host}:{self.port}/v1"


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    servers: list[FleetServer] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        for what, values in (("server name", [s.name for s in self.servers]),
                             ("port", [s.port for s in self.servers if s.port is not None]),
                             ("expert name", [e.name for s in self.servers for e in s.experts])):
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"duplicate {what}: {', '.join(map(str, dup))}")
        return self

    def experts(self) -> list[tuple[FleetServer, FleetExpert]]:
        return [(s, e) for s in self.servers for e in s.experts]


def load_fleet(path: str | Path) -> Fleet:
    """Parse and validate a fleet file.

    Raises:
        FleetError: unreadable YAML or an invalid entry, in one line naming the file.
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"fleet file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"fleet file {p} is not valid YAML: {' '.join(str(exc).split())}") from exc
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'file'}: "
                             f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
        raise FleetError(f"fleet file {p}: {problems}") from exc


def _adapter_base(folder: Path) -> str | None:
    """The base model an adapter folder names (``base_model_name_or_path``), or ``None`` if unreadable."""
    import json

    try:
        return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


class FleetManager:
    """Starts, stops and inspects one fleet on this host and keeps the registry in step.

    Args:
        fleet: the parsed fleet file; source: its path (for messages).
        settings: project settings (model store, run directory, data directory for adapters).
        registry: where the experts are registered (the router's: SQLite or the shared PostgreSQL).
    """

    def __init__(self, fleet: Fleet, *, settings: Settings, registry: ExpertRegistry, source: str = "fleet file"):
        self.fleet, self.settings, self.registry, self.source = fleet, settings, registry, source

    def _server(self, s: FleetServer) -> VLLMServer:
        args: list[str] = list(s.extra_args)
        if s.lora:
            # --max-loras: every adapter may sit in one batch (vLLM's default of 1 serialises mixed requests)
            args += ["--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(len(s.lora)),
                     "--lora-modules",
                     *(f"{name}={self._adapter(s, name)}" for name in sorted(s.lora))]
        return VLLMServer(s.model, settings=self.settings, port=s.port, max_model_len=s.max_model_len,
                          extra_args=tuple(args))

    def _adapter(self, s: FleetServer, name: str) -> Path:
        from experts.backends import SHIPPED_ADAPTERS, SHIPPED_PREFIX, adapter_path

        ref = s.lora[name]
        try:
            if ref.startswith(SHIPPED_PREFIX):
                folder = adapter_path(ref).resolve()
                if SHIPPED_ADAPTERS.resolve() not in folder.parents:
                    raise ValueError(f"{ref!r} names no shipped adapter (shipped:<domain>)")
                return folder
            return self.settings.confine(ref)
        except ValueError as exc:
            raise FleetError(f"{self.source}: server {s.name!r} adapter {name!r}: {exc}") from exc

    def check(self) -> None:
        """Everything that can be checked before starting anything.

        Raises:
            FleetError: an unknown model, a missing adapter, a port taken by another program.
        """
        from core.store import ModelStore
        from core.store.errors import ModelStoreError

        store = ModelStore(self.settings)
        for s in self.fleet.servers:
            if not s.local:
                continue
            try:
                spec = store.spec(s.model)
            except ModelStoreError as exc:
                raise FleetError(f"{self.source}: server {s.name!r}: {exc}") from None
            if spec.role != "llm":
                llms = ", ".join(n for n, m in store.catalog.items() if m.role == "llm")
                raise FleetError(f"{self.source}: server {s.name!r}: model {s.model!r} is a {spec.role}, not an LLM; "
                                 f"choose from: {llms}")
            for name in s.lora:
                folder = self._adapter(s, name)
                if not (folder / "adapter_config.json").is_file():
                    raise FleetError(f"{self.source}: server {s.name!r} adapter {name!r}: {folder} holds no "
                                     "adapter_config.json (a PEFT LoRA folder)")
                base = _adapter_base(folder)
                if base in store.catalog and base != s.model:
                    raise FleetError(f"{self.source}: server {s.name!r} adapter {name!r} was trained on {base!r}, "
                                     f"not on the server's model {s.model!r}; serve it on a {base} server")
            server = self._server(s)
            running = server.info()
            if running is not None and running.model != s.model:
                raise FleetError(f"{self.source}: server {s.name!r}: port {s.port} already serves {running.model!r}; "
                                 f"stop it (`qsef llm stop --port {s.port}`) or choose another port")
            if running is None and not _port_free(server.host, s.port):
                raise FleetError(f"{self.source}: server {s.name!r}: port {s.port} on {server.host} is in use by "
                                 "another program; choose another port in the fleet file")

    def up(self, *, timeout: float = 1800.0) -> list[dict[str, Any]]:
        """Start the local servers (or attach to ours already running) and register every expert."""
        self.check()
        for s in self.fleet.servers:
            if s.local:
                log.info("fleet: starting vLLM server", extra={"server": s.name, "model": s.model, "port": s.port})
                self._server(s).start(timeout=timeout)
        for s, e in self.fleet.experts():
            self.registry.add(self._spec(s, e), replace=True)
        return self.status()

    def _spec(self, s: FleetServer, e: FleetExpert) -> ExpertSpec:
        host = self.settings.llm_host
        description = e.description or DOMAIN_DESCRIPTIONS.get(e.domain) or f"{e.model or s.model} on fleet server {s.name}"
        prompt = DOMAIN_PROMPTS.get(e.domain, "") if e.system_prompt is None else e.system_prompt
        return ExpertSpec(name=e.name, domain=e.domain, backend="openai",
                          backend_kwargs={"base_url": s.base_url(host), "model": e.model or s.model},
                          description=description, system_prompt=prompt, cost=e.cost, size_params=e.size_params,
                          profile=e.profile)

    def down(self) -> list[str]:
        """Unregister the fleet's experts and stop its local servers; returns the experts removed."""
        removed = []
        for _, e in self.fleet.experts():
            try:
                self.registry.remove(e.name)
                removed.append(e.name)
            except ExpertNotFoundError:
                pass
        for s in self.fleet.servers:
            if s.local:
                self._server(s).stop()
        return removed

    def status(self, *, live: LiveLoad | None = None) -> list[dict[str, Any]]:
        """Per server: where, whether it answers, its live load and the experts registered on it."""
        import httpx

        live = live or LiveLoad(ttl_s=0.1, timeout_s=2.0)
        names = set(self.registry.names())
        out = []
        for s in self.fleet.servers:
            url = s.base_url(self.settings.llm_host)
            if s.local:
                st = self._server(s).status()
                healthy, pid = bool(st["healthy"]), st["pid"]
            else:
                try:
                    healthy = httpx.get(url + "/models", timeout=3).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                pid = None
            sample = live.sample(url) if healthy else None
            out.append({"server": s.name, "local": s.local, "base_url": url, "model": s.model, "healthy": healthy,
                        "pid": pid, "lora": sorted(s.lora),
                        "load": None if sample is None else {"running": sample.running, "waiting": sample.waiting,
                                                             "kv_cache": sample.kv_cache, "load": sample.load,
                                                             "saturated": sample.saturated},
                        "experts": [e.name for e in s.experts if e.name in names]})
        return out
