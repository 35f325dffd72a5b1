"""Expert health: cheap checks of each backend, written into the registry.

A probe must be cheap enough to run every few seconds next to real traffic, so it never loads a model
or generates: a remote expert answers ``GET {base_url}/models`` within a short timeout; a local one
(``hf`` folder or model-store name, ``qrh`` checkpoint) has its files in place and its weights
readable — the safetensors header parses and the file is as long as the header says (a truncated
copy fails), and a model-store model has every file of its manifest at the recorded size. Hashing
is left to ``qsef models verify``.

:func:`probe_registry` checks every registered expert and records ``health`` (``ok`` / ``down``),
``health_detail`` and ``health_at`` (the time of the check) in the registry; the dispatcher tries
experts marked ``down`` last, and ``GET /health`` lists them.

Example:
    >>> results = probe_registry(registry, lambda spec: make_backend(spec, pool=pool), timeout_s=2.0)
    >>> results["law"]
    (True, 'GET http://127.0.0.1:8001/v1/models -> 200')
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings
    from experts.registry import ExpertRegistry, ExpertSpec

log = logging.getLogger(__name__)

__all__ = ["check_model_folder", "check_safetensors", "check_store_model", "probe_registry"]

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def check_safetensors(path: Path) -> tuple[bool, str]:
    """The file's header parses and the file holds every tensor's bytes (no data is read)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                return False, f"{path.name}: header length {n} does not fit a {size}-byte file"
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as exc:
        return False, f"{path.name}: unreadable safetensors header ({exc})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return False, f"{path.name}: truncated ({size} bytes, the header needs {8 + n + end})"
    return True, f"{path.name}: {len(header) - ('__metadata__' in header)} tensors"


def check_model_folder(folder: Path, *, config: str = "config.json") -> tuple[bool, str]:
    """A local model folder: ``config`` parses and every weights file is readable.

    Returns:
        ``(ok, detail)``; the detail names what is missing or broken.
    """
    folder = Path(folder).expanduser()
    if not (folder / config).is_file():
        return False, f"{folder} has no {config}"
    try:
        json.loads((folder / config).read_text())
    except (OSError, ValueError) as exc:
        return False, f"{folder / config} is not valid JSON ({exc})"
    weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not weights:
        return False, f"{folder} has no weights ({' or '.join(WEIGHT_PATTERNS)})"
    for w in weights:
        if w.suffix == ".safetensors":
            ok, detail = check_safetensors(w)
            if not ok:
                return False, detail
        elif w.stat().st_size == 0:
            return False, f"{w.name} is empty"
    return True, f"{folder} ({len(weights)} weights file{'s' * (len(weights) > 1)})"


def check_store_model(settings: Settings, name: str) -> tuple[bool, str]:
    """A model-store model: pulled (never pulled here), every manifest file at its recorded size, and
    its folder readable by :func:`check_model_folder`."""
    from core.store import MANIFEST, ModelStore
    from core.store.errors import ModelStoreError

    try:
        folder = ModelStore(settings).path(name)
        manifest = json.loads((folder / MANIFEST).read_text())
    except (ModelStoreError, OSError, ValueError) as exc:
        return False, str(exc)
    for relative, meta in manifest.get("files", {}).items():
        p = folder / relative
        if not p.is_file() or p.stat().st_size != meta.get("size", p.stat().st_size):
            return False, f"{name}: {relative} is missing or truncated; run `qsef models pull --force {name}`"
    return check_model_folder(folder)


def probe_registry(registry: ExpertRegistry, backend_of: Callable[[ExpertSpec], Any], *,
                   timeout_s: float = 2.0, max_workers: int = 8) -> dict[str, tuple[bool, str]]:
    """Check every registered expert's backend at once and record the results in ``registry``.

    Args:
        registry: the expert registry (``health``, ``health_detail`` and ``health_at`` are written).
        backend_of: ``spec -> ExpertBackend`` (the server passes its dispatcher's cached backends; the
            CLI ``lambda spec: make_backend(spec, pool=ModelPool(settings))``).
        timeout_s: budget of each remote check.
        max_workers: checks run in parallel, so one unreachable host does not delay the others.

    Returns:
        ``{name: (ok, detail)}`` for every expert checked.
    """
    from experts.backends import BackendError

    specs = registry.list()

    def check(spec: ExpertSpec) -> tuple[bool, str]:
        try:
            return backend_of(spec).health(timeout_s=timeout_s)
        except BackendError as exc:
            return False, str(exc)
        except Exception as exc:  # a probe must never stop the others; the failure is the finding
            return False, f"{type(exc).__name__}: {exc}"

    results: dict[str, tuple[bool, str]] = {}
    with cf.ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(specs))), thread_name_prefix="probe") as ex:
        for spec, (ok, detail) in zip(specs, ex.map(check, specs), strict=True):
            results[spec.name] = (ok, detail)
            try:
                registry.set_health(spec.name, "ok" if ok else "down", detail)
            except Exception as exc:  # removed meanwhile or the database is busy: logged, next round retries
                log.warning("could not record expert health", extra={"expert": spec.name, "error": str(exc)[:200]})
            if not ok:
                log.warning("expert health probe failed", extra={"expert": spec.name, "detail": detail[:200]})
    return results
