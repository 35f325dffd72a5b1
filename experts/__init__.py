"""Experts: the small domain models that answer routed sub-tasks.

An *expert* is a registry entry (:class:`experts.registry.ExpertSpec`): a name, a domain, a profile
that QSEF scores against, a size and cost, health, and a *backend* that turns chat messages into an
answer. The registry (:class:`experts.registry.ExpertRegistry`) is a SQLite file under the data
directory; experts can be added, updated and removed while the API server runs. Backends live in
:mod:`experts.backends` behind one resolver: ``hf`` (local causal-LM folder), ``openai`` (remote
OpenAI-compatible endpoint), ``qrh`` (a distilled QRH student, :mod:`experts.qrh`).

Example:
    >>> from experts.registry import ExpertRegistry
    >>> from experts.backends import ModelPool, make_backend
    >>> reg = ExpertRegistry("experts.sqlite")
    >>> reg.ensure_default_fleet()            # medicine, law, code, finance, general on Qwen-0.5B
    >>> law = make_backend(reg.get("law"), pool=ModelPool(Settings()))
    >>> law.generate([{"role": "user", "content": "What is a tort?"}], max_tokens=64)
"""
