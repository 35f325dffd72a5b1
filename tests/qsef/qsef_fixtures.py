"""Tiny, deterministic fixtures for the QSEF tests: a hashing encoder, a toy graph and five experts."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from qsef.components import KGAccess
from qsef.profiles import ExpertProfile, LexicalIndex

DIM = 32
CORPORA = {
    "medicine": ["the patient has hypertension and the doctor prescribes a drug",
                 "symptoms of diabetes include thirst; insulin therapy treats it",
                 "clinical diagnosis of fever and infection in the hospital"],
    "law": ["the court ruled the contract void under statute",
            "a tort is a civil wrong; the plaintiff sued the defendant",
            "the judge applied the constitution and precedent"],
    "code": ["a python function returns a list; the loop iterates",
             "compile the program and fix the syntax error in the code",
             "a hash table gives constant time lookup in the algorithm"],
    "finance": ["the bank raised interest rates and inflation fell",
                "stock prices and bond yields in the market",
                "accounting ledger records assets, liabilities and equity"],
    "general": ["the capital of france is paris, a city on the seine",
                "ancient history of rome and the roman empire",
                "geography of mountains, rivers and oceans of the world"],
}


class HashEncoder:
    """Bag-of-words hashing encoder: same interface as ``qsef.encoder.Encoder`` (unit rows)."""

    name = "hash"
    dim = DIM

    def __init__(self) -> None:
        self.forward_calls = 0

    def encode(self, texts, *, use_cache: bool = True) -> np.ndarray:
        self.forward_calls += len(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[i, h % DIM] += 1.0 if (h >> 8) % 2 else -1.0
        out += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class Mention:
    node_id: str
    label: str
    start: int
    end: int
    score: float = 1.0
    method: str = "exact"


class ToyGraph:
    """A path graph of labels; distance = hops / cap between the closest linked node and anchor."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def path_distance(self, sources, targets, cap: int = 6) -> float:
        pos = {n: i for i, n in enumerate(self.labels)}
        best = min(abs(pos[s] - pos[t]) for s in sources for t in targets if s in pos and t in pos)
        return min(1.0, best / cap)

    def anchors(self, k: int) -> list[str]:
        return self.labels[:k]


GRAPHS = {
    "medicine": ToyGraph(["hypertension", "drug", "diabetes", "insulin", "fever"]),
    "law": ToyGraph(["court", "contract", "tort", "statute", "judge"]),
    "code": ["python", "function", "loop", "compile", "algorithm"],
}
GRAPHS["code"] = ToyGraph(GRAPHS["code"])


def toy_link(text: str, graph: ToyGraph) -> list[Mention]:
    out = []
    low = text.lower()
    for lab in graph.labels:
        i = low.find(lab)
        if i >= 0:
            out.append(Mention(lab, lab, i, i + len(lab)))
    return out


def toy_density(text: str, graph: ToyGraph, *, mentions=None) -> float:
    words = re.findall(r"\w+", text) or [""]
    return len(mentions if mentions is not None else toy_link(text, graph)) / len(words)


def toy_loader(domain: str) -> ToyGraph:
    if domain not in GRAPHS:
        raise FileNotFoundError(f"no graph for {domain}")
    return GRAPHS[domain]


def make_experts(encoder: HashEncoder | None = None) -> list[ExpertProfile]:
    enc = encoder or HashEncoder()
    out = []
    for d, texts in CORPORA.items():
        g = GRAPHS.get(d)
        out.append(ExpertProfile(name=d, domain=d, centroid=enc.encode(texts).mean(axis=0),
                                 params=0.5e9 if d != "general" else 1.5e9, cost=1.0 if d != "general" else 3.0,
                                 kg_domain=d if g else None, kg_anchors=g.anchors(2) if g else [],
                                 lexical=LexicalIndex.build(texts)))
    return out


def install_toy_kg(monkeypatch) -> KGAccess:
    """Patch ``kg.link`` / ``kg.concept_density`` with the toy versions; return a KG access over toy graphs."""
    import kg

    monkeypatch.setattr(kg, "link", toy_link, raising=False)
    monkeypatch.setattr(kg, "concept_density", toy_density, raising=False)
    return KGAccess(loader=toy_loader)


QUERIES = [
    "Which drug treats hypertension in a diabetes patient?",
    "Can the court void a contract for fraud under the statute?",
    "Why does my python function loop forever before it can compile?",
    "How do interest rates affect bond yields and inflation?",
    "What is the capital city on the river seine?",
]
LABELS = ["medicine", "law", "code", "finance", "general"]
