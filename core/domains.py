"""The five routing domains — the one definition every package reads.

A domain is a label: the default experts, corpora, graphs and evaluation sets are all keyed by it.
A registered expert may carry any domain name that passes :func:`valid_domain_name`; only these five
have shipped corpora, graphs and profiles.

Example:
    >>> from core.domains import DOMAINS, check_domain
    >>> DOMAINS
    ('medicine', 'law', 'code', 'finance', 'general')
    >>> check_domain("law")
    'law'
"""

from __future__ import annotations

import re

DOMAINS: tuple[str, ...] = ("medicine", "law", "code", "finance", "general")
"""The five default domains, in the order every report uses."""

DOMAIN_DESCRIPTIONS: dict[str, str] = {
    "medicine": "medicine, health, diseases, symptoms, drugs, anatomy, clinical care",
    "law": "law, legal rights, contracts, courts, regulation, licences, crime",
    "code": "programming, software, algorithms, computer science, security, machine learning",
    "finance": "finance, money, accounting, investing, taxes, markets, economics",
    "general": "general knowledge: history, geography, science, culture, everyday questions",
}
"""One line per domain: what the router LLM is told each domain covers."""

_DOMAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_domain(domain: str, *, error: type[Exception] = ValueError) -> str:
    """Return ``domain`` if it is one of :data:`DOMAINS`.

    Args:
        domain: the name to check.
        error: the exception class to raise (each package raises its own domain error).

    Raises:
        error: naming the allowed domains.
    """
    if domain not in DOMAINS:
        raise error(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    return domain


def valid_domain_name(name: object) -> bool:
    """Whether ``name`` can label an expert's domain: lower-case letters, digits, ``_`` or ``-``,
    at most 64 characters — so it is safe as a file-name part and a metrics label."""
    return isinstance(name, str) and bool(_DOMAIN_NAME.match(name))
