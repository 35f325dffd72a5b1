"""A small resolver per kind of component (pykeen/class-resolver style).

A resolver turns a name, a class or an instance (plus keyword arguments) into an instance:

    >>> loss_resolver.make("kd", temperature=2.0)
    >>> loss_resolver.make(KDLoss, {"temperature": 2.0})
    >>> loss_resolver.options          # the names a CLI offers as choices
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownComponentError(KeyError):
    """A component name that no resolver entry matches; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Resolver(Generic[T]):
    """Name -> class table for one kind of component, with a normalised lookup."""

    def __init__(self, base: type[T], classes: Iterable[type[T]], *, suffix: str = "", default: str | None = None):
        self.base, self.suffix, self.default = base, suffix.lower(), default
        self._table: dict[str, type[T]] = {}
        for cls in classes:
            self.register(cls)

    def normalize(self, name: str) -> str:
        key = name.lower().replace("_", "").replace("-", "").replace(" ", "")
        return key[: -len(self.suffix)] if self.suffix and key.endswith(self.suffix) and key != self.suffix else key

    def register(self, cls: type[T], *synonyms: str) -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a subclass of {self.base.__name__}")
        for key in (cls.__name__, *synonyms, *getattr(cls, "synonyms", ())):
            self._table[self.normalize(key)] = cls
        return cls

    @property
    def options(self) -> list[str]:
        """Canonical names (class names, normalised), sorted."""
        return sorted({self.normalize(c.__name__) for c in self._table.values()})

    def lookup(self, query: str | type[T] | None) -> type[T]:
        if query is None:
            if self.default is None:
                raise UnknownComponentError(f"no {self.base.__name__} given; choose one of {self.options}")
            query = self.default
        if isinstance(query, type):
            if issubclass(query, self.base):
                return query
            raise TypeError(f"{query!r} is not a {self.base.__name__}")
        try:
            return self._table[self.normalize(query)]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.base.__name__} {query!r}; choose one of {self.options}") from None

    def make(self, query: str | type[T] | T | None, kwargs: Mapping[str, Any] | None = None, **more: Any) -> T:
        """An instance from a name or class (built with ``kwargs`` and ``more``), or the instance itself."""
        if isinstance(query, self.base):
            if kwargs or more:
                raise ValueError(f"got an instance of {type(query).__name__} and also keyword arguments")
            return query
        return self.lookup(query)(**{**(kwargs or {}), **more})
