"""WordNet 3.0 (Debian ``wordnet-base`` + ``wordnet-sense-index``) read by NLTK from a local copy.

Debian installs the database under ``/usr/share/wordnet`` without NLTK's ``lexnames`` file, and NLTK
only reads corpora under its data path. :func:`wordnet_reader` copies the files once to
``$QSEF_HOME/nltk_data/corpora/wordnet/``, writes ``lexnames`` and puts that folder on NLTK's path —
no download ever happens.

The ``general`` graph is the whole database. Domain graphs take the synsets filed under the domain's
WordNet topic domains plus the hyponym closure of a few root synsets, and keep their hypernym ancestors
as unlinkable context nodes so the is_a hierarchy stays connected.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.errors import SourceUnavailable
from kg.importers.base import Fragment, Importer, debian_version

if TYPE_CHECKING:
    from core.settings import Settings

WORDNET_SYSTEM_DIR = Path("/usr/share/wordnet")
INSTALL_HINT = "apt-get install wordnet-base wordnet-sense-index (listed in deps/apt.txt)"

# The 45 WordNet lexicographer files in file-number order (WordNet's lexnames(5WN)).
LEXNAMES = (  # noqa: SIM905
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
_FILES = (
    "data.noun",
    "data.verb",
    "data.adj",
    "data.adv",
    "index.noun",
    "index.verb",
    "index.adj",
    "index.adv",
    "noun.exc",
    "verb.exc",
    "adj.exc",
    "adv.exc",
    "index.sense",
    "cntlist.rev",
)

# Per domain: topic-domain synsets whose members (and the members of their hyponyms, with the members'
# hyponyms) are taken; topic synsets whose direct members only are taken; root synsets whose hyponym
# closure is taken; whole lexicographer files. Chosen by reading the synsets' glosses and samples.
DOMAIN_SELECTION: dict[str, dict[str, Any]] = {
    "medicine": {
        "topics": [
            "medicine.n.01",
            "medicine.n.03",
            "pathology.n.01",
            "surgery.n.01",
            "anatomy.n.01",
            "physiology.n.01",
            "psychiatry.n.01",
            "pharmacology.n.01",
            "genetics.n.01",
            "virology.n.01",
            "immunology.n.01",
        ],
        "direct_topics": [],
        "roots": [
            "disease.n.01",
            "illness.n.01",
            "symptom.n.01",
            "drug.n.01",
            "medicine.n.02",
            "body_part.n.01",
            "organ.n.01",
            "medical_procedure.n.01",
            "medical_practitioner.n.01",
            "patient.n.01",
            "health_professional.n.01",
            "vitamin.n.01",
            "virus.n.01",
            "microorganism.n.01",
            "hormone.n.01",
            "liquid_body_substance.n.01",
            "infection.n.01",
            "injury.n.01",
            "diet.n.01",
            "medical_care.n.01",
            "hospital.n.01",
            "tissue.n.01",
            "cell.n.02",
            "gene.n.01",
            "nutrition.n.01",
            "pathogen.n.01",
            "bacteria.n.01",
        ],
        "lexnames": [],
    },
    "law": {
        "topics": ["law.n.01", "jurisprudence.n.01", "criminal_law.n.01", "civil_law.n.01"],
        "direct_topics": [],
        "roots": [
            "law.n.01",
            "law.n.02",
            "court.n.01",
            "court.n.02",
            "judge.n.01",
            "lawyer.n.01",
            "crime.n.01",
            "lawsuit.n.01",
            "contract.n.01",
            "legislative_act.n.01",
            "tort.n.01",
            "trial.n.04",
            "verdict.n.01",
            "evidence.n.03",
            "testimony.n.01",
            "legislation.n.01",
            "legislation.n.02",
            "fundamental_law.n.01",
            "jurisprudence.n.01",
            "legal_document.n.01",
            "judgment.n.03",
            "punishment.n.01",
            "jury.n.01",
            "legal_right.n.01",
            "due_process.n.01",
            "legal_action.n.01",
            "appeal.n.03",
            "plea.n.02",
        ],
        "lexnames": [],
    },
    "finance": {
        "topics": [
            "economics.n.01",
            "finance.n.01",
            "finance.n.02",
            "finance.n.03",
            "banking.n.01",
            "accountancy.n.01",
            "tax.n.01",
            "stock_exchange.n.01",
            "business.n.01",
        ],
        # their hyponyms reach farming and mining: members only
        "direct_topics": ["commerce.n.01", "commercial_enterprise.n.02"],
        "roots": [
            "money.n.01",
            "money.n.02",
            "money.n.03",
            "security.n.04",
            "stock.n.01",
            "bond.n.02",
            "tax.n.01",
            "accounting.n.04",
            "accountancy.n.01",
            "economy.n.01",
            "market.n.01",
            "market.n.04",
            "loan.n.01",
            "debt.n.02",
            "interest.n.04",
            "price.n.02",
            "inflation.n.01",
            "insurance.n.01",
            "investment.n.02",
            "investing.n.01",
            "financial_institution.n.01",
            "finance.n.01",
            "finance.n.02",
            "finance.n.03",
            "economics.n.01",
            "monetary_value.n.01",
            "currency.n.01",
            "budget.n.01",
            "income.n.01",
            "payment.n.01",
            "assets.n.01",
            "liabilities.n.01",
            "capital.n.01",
            "stock_exchange.n.01",
            "company.n.01",
            "corporation.n.01",
            "financial_gain.n.01",
            "cost.n.01",
            "trade.n.01",
            "sale.n.01",
            "purchase.n.01",
            "accounting.n.02",
            "financial_statement.n.01",
            "economic_process.n.01",
            "commercial_document.n.01",
            "financier.n.01",
            "economist.n.01",
            "banker.n.01",
            "accountant.n.01",
            "investor.n.01",
            "economic_policy.n.01",
            "monetary_unit.n.01",
            "buy.v.01",
            "sell.v.01",
            "pay.v.01",
            "invest.v.01",
            "finance.v.01",
            "trade.v.01",
        ],
        "lexnames": ["noun.possession"],
    },
    "code": {
        "topics": ["computer_science.n.01", "computer.n.01"],
        "direct_topics": [],
        "roots": [
            "software.n.01",
            "computer.n.01",
            "programming_language.n.01",
            "algorithm.n.01",
            "data_structure.n.01",
            "computer_network.n.01",
            "computer_science.n.01",
            "programming.n.02",
        ],
        "lexnames": [],
    },
}

_LOCK = threading.Lock()


def wordnet_reader(settings: Settings, system_dir: Path = WORDNET_SYSTEM_DIR):
    """An NLTK ``WordNetCorpusReader`` over the Debian WordNet files (copied once, offline).

    Raises:
        SourceUnavailable: when the Debian packages are not installed.
    """
    with _LOCK:
        return _reader(settings, str(system_dir))


@lru_cache(maxsize=2)
def _reader(settings: Settings, system_dir: str):
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    src = Path(system_dir)
    missing = [f for f in _FILES if not (src / f).is_file()]
    if missing:
        raise SourceUnavailable(f"WordNet files missing in {src}: {', '.join(missing)}; {INSTALL_HINT}")
    root = settings.path("nltk_data")
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        s, t = src / name, target / name
        if not t.is_file() or t.stat().st_size != s.stat().st_size:
            shutil.copyfile(s, t)
    lexnames = "".join(
        f"{i:02d}\t{name}\t{_SYNTACTIC[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)
    )
    lex = target / "lexnames"
    if not lex.is_file() or lex.read_text() != lexnames:
        lex.write_text(lexnames)
    if str(root) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available" — we use none
        return WordNetCorpusReader(str(target), None)


@lru_cache(maxsize=2)
def _sense_counts(system_dir: str) -> dict[str, int]:
    """Sense key -> SemCor tag count, from ``cntlist.rev``."""
    out: dict[str, int] = {}
    with open(Path(system_dir) / "cntlist.rev", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                out[parts[0]] = int(parts[2])
    return out


def _name(lemma_name: str) -> str:
    return lemma_name.replace("_", " ")


class WordNetImporter(Importer):
    """WordNet synsets and relations; the whole database for ``general``, a selection for other domains."""

    name = "wordnet"
    title = "WordNet 3.0 (Debian wordnet-base, wordnet-sense-index) via NLTK"
    licence = "WordNet 3.0 licence (Princeton; free use, copyright notice retained)"
    url = "https://wordnet.princeton.edu/"
    domains = ("general", "medicine", "law", "finance", "code")
    install_hint = INSTALL_HINT

    def __init__(self, system_dir: Path = WORDNET_SYSTEM_DIR) -> None:
        self.system_dir = system_dir

    def select(self, wn, domain: str) -> tuple[set, set]:
        """(core synsets, context ancestors) for a domain."""
        if domain == "general":
            return set(wn.all_synsets()), set()
        sel = DOMAIN_SELECTION[domain]

        def synset(name: str):
            try:
                return wn.synset(name)
            except Exception:  # a misspelt root must not pass silently
                raise SourceUnavailable(
                    f"WordNet has no synset {name!r} (domain selection for {domain})"
                ) from None

        def down(s) -> set:
            return set(s.closure(lambda x: x.hyponyms() + x.instance_hyponyms())) | {s}

        topics = set()
        for t in sel["topics"]:
            topics |= down(synset(t))
        core = set()
        for s in topics:
            for m in s.in_topic_domains():
                core |= down(m)
        for t in sel["direct_topics"]:
            core |= set(synset(t).in_topic_domains())
        for r in sel["roots"]:
            core |= down(synset(r))
        if sel["lexnames"]:
            wanted = set(sel["lexnames"])
            core |= {s for s in wn.all_synsets("n") if s.lexname() in wanted}
        context = set()
        for s in core:
            for path_node in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()):
                if path_node not in core:
                    context.add(path_node)
        return core, context

    def build(self, settings: Settings, domain: str) -> Fragment:
        wn = wordnet_reader(settings, self.system_dir)
        counts = _sense_counts(str(self.system_dir))
        frag = self.fragment(
            version="3.0",
            package=f"wordnet-base {debian_version('wordnet-base')}, wordnet-sense-index {debian_version('wordnet-sense-index')}",
            file=str(self.system_dir),
        )
        core, context = self.select(wn, domain)
        keep = core | context
        ids = {s: f"WN:{s.name()}" for s in keep}
        for s in keep:
            by_name: dict[str, int] = {}
            for lm in s.lemmas():
                name = _name(lm.name())
                by_name[name] = by_name.get(name, 0) + counts.get(lm.key(), 0)
            names, lemma_counts = list(by_name), list(by_name.values())  # counts[i] belongs to names[i]
            attrs: dict[str, Any] = {"pos": s.pos()}
            if any(lemma_counts):
                attrs["counts"] = lemma_counts
                attrs["freq"] = sum(lemma_counts)
            if s in context:
                attrs["nolink"] = True
            frag.node(ids[s], names[0], names[1:], s.definition(), **attrs)
        for s in keep:
            h = ids[s]
            for rel, targets in self._relations(s, domain == "general"):
                for t in targets:
                    if t in ids:
                        frag.edge(h, rel, ids[t])
            if not s.hypernyms() and not s.instance_hypernyms() and s.pos() in "nv":
                frag.roots.append(h)
        if domain != "general":
            frag.provenance["selection"] = DOMAIN_SELECTION[domain]
        frag.provenance["core_synsets"] = len(core)
        frag.provenance["context_synsets"] = len(context)
        return frag

    @staticmethod
    def _relations(s, full: bool) -> Iterable[tuple[str, list]]:
        yield "is_a", s.hypernyms()
        yield "instance_of", s.instance_hypernyms()
        yield "part_of", s.part_holonyms() + s.member_holonyms() + s.substance_holonyms()
        yield "in_domain", s.topic_domains()
        yield "related", s.similar_tos() + s.attributes() + s.entailments() + s.causes()
        yield "see_also", s.also_sees()
        ants = []
        for lm in s.lemmas():
            ants.extend(a.synset() for a in lm.antonyms())
        yield "antonym_of", ants
        if full:
            der = []
            for lm in s.lemmas():
                der.extend(d.synset() for d in lm.derivationally_related_forms())
            yield "related", [d for d in der if d != s]


def common_words(min_count: int = 3, system_dir: Path = WORDNET_SYSTEM_DIR) -> frozenset[str]:
    """Single words used in ordinary English: SemCor tag counts over all their senses >= ``min_count``."""
    totals: dict[str, int] = {}
    for key, n in _sense_counts(str(system_dir)).items():
        lemma = key.split("%", 1)[0]
        if "_" not in lemma:
            totals[lemma] = totals.get(lemma, 0) + n
    return frozenset(w for w, n in totals.items() if n >= min_count)


@lru_cache(maxsize=1)
def _word_senses(settings: Settings, system_dir: str) -> dict[str, list[tuple[str, str, int]]]:
    """word -> [(synset name, pos, SemCor count of the word in that sense)] in WordNet's sense order."""
    wn = _reader(settings, system_dir)
    counts = _sense_counts(system_dir)
    out: dict[str, list[tuple[str, str, int]]] = {}
    for s in wn.all_synsets():
        for lm in s.lemmas():
            name = lm.name().lower()
            if "_" in name:
                continue
            out.setdefault(name, []).append((s.name(), s.pos(), counts.get(lm.key(), 0)))
    return out


# sources whose single-word entries are mostly everyday words with one specialised sense
_STRICT_SOURCES = {"gcide-law": 15, "gcide-finance": 15, "licenses": 3, "courts": 3}


def mark_ambiguous_names(settings: Settings, graph, system_dir: Path = WORDNET_SYSTEM_DIR) -> int:
    """Flag one-word names that usually mean something else in ordinary English (``attrs["minor"]``).

    The linker does not match flagged names; the concept stays reachable through its other names.
    Applied to domain graphs only (the general graph is WordNet itself, where the linker picks the
    most frequent sense). With a word's WordNet senses and SemCor counts:

    * WordNet concepts: a name is flagged unless this synset is the word's most frequent sense or is
      used for the word at least a quarter as often (``gun`` is not ``gunman``; ``short`` is rarely
      ``short.a.06``, the finance sense);
    * other sources, for words used in ordinary English (counts >= 3): flagged when the word's most
      frequent sense is not a noun (``main``, ``special``, ``perform``), when the name is a synonym
      rather than the label (FOLDOC's ``mapping`` for *function*), and for dictionary and licence
      entries when the word is very common (``day``, ``make``, ``supervisor``).

    Words are looked up as written and stemmed, as the linker matches them.

    Returns:
        How many names were flagged.
    """
    from dataclasses import replace

    from kg.text import stem

    senses = _word_senses(settings, str(system_dir))
    flagged = 0
    for node in list(graph.nodes()):
        if node.attrs.get("nolink"):
            continue
        minor = []
        wn_name = node.id[3:] if node.id.startswith("WN:") else None
        for k, name in enumerate(node.names()):
            word = name.strip().lower()
            base = stem(word)  # the linker matches "terms" where the text says "term"
            if " " in word or (word not in senses and base not in senses):
                continue
            options = list({s: (s, p, c) for s, p, c in senses.get(word, []) + senses.get(base, [])}.values())
            total = sum(c for _, _, c in options)
            dominant = max(options, key=lambda o: o[2])  # ties: first in WordNet order
            if wn_name is not None:
                mine = next((c for s, _, c in options if s == wn_name), 0)
                if dominant[2] > 0 and dominant[0] != wn_name and mine < 0.25 * dominant[2]:
                    minor.append(name)
                continue
            if total < 3:
                continue
            strict = _STRICT_SOURCES.get(node.source)
            if dominant[1] != "n" or (strict is not None and total >= strict) or k > 0:
                minor.append(name)
        if minor:
            graph.g.nodes[node.id]["node"] = replace(node, attrs={**node.attrs, "minor": minor})
            flagged += len(minor)
    graph._touch()
    return flagged
