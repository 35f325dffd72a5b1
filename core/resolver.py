"""One resolver per kind of component (pykeen/class-resolver style).

A resolver turns a name, a class or an instance (plus keyword arguments) into an instance:

    >>> loss_resolver.make("kd", temperature=2.0)
    >>> loss_resolver.make(KDLoss, {"temperature": 2.0})
    >>> loss_resolver.options          # the canonical names, sorted: what a CLI offers as choices
    >>> loss_resolver.make("nope")     # UnknownComponentError: unknown KD loss 'nope'; choose one of [...]

A class's canonical name is its ``name`` class attribute when it has one (``"d_emb"``, ``"hf"``), else
its class name, normalised (lower case, no ``_``/``-``/spaces) with the resolver's ``suffix`` cut off
(``ReverseKLLoss`` -> ``reversekl``). Lookups are normalised the same way and also match the class
name and any ``synonyms`` the class declares. Every kind of component in the project ends its module
with one such resolver (``tests/core/test_resolver.py`` collects them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownComponentError(KeyError, ValueError):
    """A component name that no resolver entry matches; the message lists the valid names.

    Both a ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument value, so pydantic
    validators and CLI handlers report it like any other invalid value).
    """

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Resolver(Generic[T]):
    """Name -> class table for one kind of component, with a normalised lookup.

    Args:
        base: the base class every registered class derives from.
        classes: the classes to register, in a meaningful order (:attr:`names` keeps it).
        suffix: cut off normalised class names (``"loss"``: ``KDLoss`` -> ``kd``).
        default: the name :meth:`lookup` uses for ``None``.
        kind: how error messages name the kind (default: the base class name).
    """

    def __init__(self, base: type[T], classes: Iterable[type[T]], *, suffix: str = "", default: str | None = None,
                 kind: str | None = None):
        self.base, self.suffix, self.default = base, suffix.lower(), default
        self.kind = kind or base.__name__
        self._table: dict[str, type[T]] = {}
        self._names: dict[type[T], str] = {}
        self._synonyms: dict[str, type[T]] = {}
        for cls in classes:
            self.register(cls)
        if default is not None:
            self.lookup(default)  # a typo in the default fails at import, not at the first call

    def normalize(self, name: str) -> str:
        key = name.lower().replace("_", "").replace("-", "").replace(" ", "")
        return key[: -len(self.suffix)] if self.suffix and key.endswith(self.suffix) and key != self.suffix else key

    def canonical(self, cls: type[T]) -> str:
        """The name a class is listed under: its ``name`` class attribute, else its normalised class name."""
        name = cls.__dict__.get("name")
        return name if isinstance(name, str) else self.normalize(cls.__name__)

    def register(self, cls: type[T], *synonyms: str) -> type[T]:
        """Add ``cls`` under its canonical name, its class name and its synonyms.

        Raises:
            TypeError: ``cls`` is not a subclass of the base class.
            ValueError: one of its names already belongs to another class.
        """
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a subclass of {self.base.__name__}")
        declared = (*synonyms, *getattr(cls, "synonyms", ()))
        for key in (self.canonical(cls), cls.__name__, *declared):
            other = self._table.get(self.normalize(key))
            if other is not None and other is not cls:
                raise ValueError(f"{self.kind} name {key!r} of {cls.__name__} is taken by {other.__name__}")
            self._table[self.normalize(key)] = cls
        self._names[cls] = self.canonical(cls)
        self._synonyms.update({s: cls for s in declared})
        return cls

    @property
    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self._names.values())

    @property
    def options(self) -> list[str]:
        """Canonical names, sorted (CLI choices)."""
        return sorted(self._names.values())

    @property
    def choices(self) -> list[str]:
        """Canonical names and declared synonyms, sorted: every spelling a CLI should accept as is."""
        return sorted({*self._names.values(), *self._synonyms})

    @property
    def classes(self) -> list[type[T]]:
        """The registered classes in registration order."""
        return list(self._names)

    def __contains__(self, query: object) -> bool:
        return isinstance(query, str) and self.normalize(query) in self._table

    def lookup(self, query: str | type[T] | T | None) -> type[T]:
        """The class for a name (normalised), a class, or an instance (its class).

        Raises:
            UnknownComponentError: an unknown name, or ``None`` without a default; lists the valid names.
            TypeError: a class or instance of another kind.
        """
        if query is None:
            if self.default is None:
                raise UnknownComponentError(f"no {self.kind} given; choose one of {self.options}")
            query = self.default
        if isinstance(query, self.base):
            return type(query)
        if isinstance(query, type):
            if issubclass(query, self.base):
                return query
            raise TypeError(f"{query!r} is not a {self.base.__name__}")
        if not isinstance(query, str):
            raise TypeError(f"cannot resolve {query!r} to a {self.kind}; give a name, class or instance")
        try:
            return self._table[self.normalize(query)]
        except KeyError:
            raise UnknownComponentError(f"unknown {self.kind} {query!r}; choose one of {self.options}") from None

    def canonical_name(self, query: str | type[T] | T | None) -> str:
        """The canonical name of whatever ``query`` resolves to (``"top-k"`` -> ``"top_k"``)."""
        cls = self.lookup(query)
        return self._names.get(cls) or self.canonical(cls)

    def make(self, query: str | type[T] | T | None, kwargs: Mapping[str, Any] | None = None, **more: Any) -> T:
        """An instance from a name or class (built with ``kwargs`` and ``more``), or the instance itself.

        Raises:
            UnknownComponentError: see :meth:`lookup`.
            ValueError: an instance together with keyword arguments.
        """
        if isinstance(query, self.base):
            if kwargs or more:
                raise ValueError(f"got an instance of {type(query).__name__} and also keyword arguments")
            return query
        return self.lookup(query)(**{**(kwargs or {}), **more})
