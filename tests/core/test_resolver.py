"""The resolver: unit tests of :class:`core.resolver.Resolver`, and the meta-test (as pykeen has) that
collects every resolver in the product and checks that each registered component is exercised by a test."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from core.resolver import Resolver, UnknownComponentError

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "corpora", "qsef", "kg", "experts", "router", "distill", "api")
TESTS = ROOT / "tests"
_DEFINITION = re.compile(r"^(\w+)\s*(?::\s*Resolver\[[^\]]*\])?\s*=\s*Resolver\(", re.MULTILINE)


# ----------------------------------------------------------------------------------------- unit tests
class Shape:
    def __init__(self, size: int = 1) -> None:
        self.size = size


class SquareShape(Shape):
    synonyms = ("box",)


class RoundShape(Shape):
    name = "circle"


class Other:
    pass


@pytest.fixture
def shapes() -> Resolver[Shape]:
    return Resolver(Shape, [SquareShape, RoundShape], suffix="shape", default="square", kind="shape")


def test_names_options_and_choices(shapes):
    assert shapes.names == ["square", "circle"]  # registration order; "name" attribute wins
    assert shapes.options == ["circle", "square"]
    assert shapes.choices == ["box", "circle", "square"]
    assert shapes.classes == [SquareShape, RoundShape]
    assert "Square-Shape" in shapes and "box" in shapes and "triangle" not in shapes and 3 not in shapes


def test_lookup_by_name_class_instance_and_default(shapes):
    for query in ("square", "SQUARE", "square_shape", "SquareShape", "box", SquareShape, SquareShape(), None):
        assert shapes.lookup(query) is SquareShape, query
    assert shapes.lookup("circle") is RoundShape and shapes.lookup("round-shape") is RoundShape
    assert shapes.canonical_name("RoundShape") == "circle" and shapes.canonical_name(None) == "square"


def test_make_passes_kwargs_and_returns_instances(shapes):
    assert shapes.make("circle", {"size": 2}).size == 2
    assert shapes.make(RoundShape, size=3).size == 3
    assert shapes.make("box", {"size": 2}, size=5).size == 5  # explicit keywords win
    inst = RoundShape()
    assert shapes.make(inst) is inst
    with pytest.raises(ValueError, match="also keyword arguments"):
        shapes.make(inst, size=2)


def test_errors_name_the_valid_choices(shapes):
    with pytest.raises(UnknownComponentError, match=r"unknown shape 'triangle'; choose one of \['circle', 'square'\]"):
        shapes.lookup("triangle")
    with pytest.raises(KeyError) as err:
        shapes.make("triangle")
    assert isinstance(err.value, ValueError) and str(err.value).startswith("unknown shape")  # not KeyError's quoting
    with pytest.raises(TypeError, match="not a Shape"):
        shapes.lookup(Other)
    with pytest.raises(TypeError, match="cannot resolve"):
        shapes.lookup(3)  # type: ignore[arg-type]
    with pytest.raises(UnknownComponentError, match="no shape given"):
        Resolver(Shape, [SquareShape], kind="shape").lookup(None)


def test_registration_is_checked():
    with pytest.raises(TypeError, match="not a subclass of Shape"):
        Resolver(Shape, [Other])  # type: ignore[list-item]
    with pytest.raises(UnknownComponentError):
        Resolver(Shape, [SquareShape], default="triangle")  # a bad default fails at construction

    class Box(Shape):
        pass

    with pytest.raises(ValueError, match="'box' of Box is taken by SquareShape"):
        Resolver(Shape, [SquareShape, Box], kind="shape")
    r = Resolver(Shape, [SquareShape])
    r.register(RoundShape, "disc")
    assert r.lookup("disc") is RoundShape and r.names == ["squareshape", "circle"]  # no suffix to cut


# ----------------------------------------------------------------------------------------- meta-test
def _resolver_definitions() -> list[tuple[str, str]]:
    """``(module, name)`` of every ``x = Resolver(...)`` at module level in the product packages."""
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for m in _DEFINITION.finditer(path.read_text(encoding="utf-8")):
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                found.append((module.removesuffix(".__init__"), m.group(1)))
    return found


DEFINITIONS = _resolver_definitions()


def test_every_kind_of_component_has_its_resolver():
    names = {name for _, name in DEFINITIONS}
    assert names >= {"component_resolver", "backend_resolver", "router_llm_resolver", "answer_aggregator_resolver",
                     "selection_strategy_resolver", "loss_resolver", "teacher_aggregator_resolver",
                     "sampler_resolver", "routing_method_resolver"}
    assert len(names) == len(DEFINITIONS), "two resolvers share a name; say what each resolves"


def test_no_other_registry_mechanism():
    """A ``*_resolver`` that is not a Resolver (a dict, a hand-written class) is a second mechanism."""
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\w+_resolver\s*(:\s*dict\b[^=]*)?=\s*\{", text, re.MULTILINE), path
            assert not re.search(r"^class \w+Resolver\b", text, re.MULTILINE), path


def _test_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


@pytest.mark.parametrize(("module", "name"), DEFINITIONS, ids=[f"{m}.{n}" for m, n in DEFINITIONS])
def test_every_registered_component_has_a_test(module, name):
    """Each class in each resolver is named in some test: by class name, or by its canonical name in quotes."""
    resolver = getattr(importlib.import_module(module), name)
    assert isinstance(resolver, Resolver)
    sources = _test_sources()
    untested = [cls.__name__ for cls in resolver.classes
                if not re.search(rf"\b{cls.__name__}\b", sources)
                and not re.search(rf"[\"']{re.escape(resolver.canonical(cls))}[\"']", sources)]
    assert not untested, f"{module}.{name}: no test names {untested}"
