"""The router: a compound query in, routed answers with their reasons out.

Request path (SPEC §3): :mod:`router.decompose` splits the query into sub-tasks with the router LLM
(:mod:`router.llm`; fast path for single questions, flagged clause-splitter fallback), then
:mod:`router.scoring` scores every sub-task against the registry's experts with QSEF and selects
(argmax, top-K, cost-aware, threshold), :mod:`router.dispatch` calls the chosen experts with a
timeout and next-best fallback and aggregates the answers, and :mod:`router.feedback` stores every
outcome durably (it is also QSEF's history for ``C_model``). :class:`router.pipeline.Router` ties
them together.

Example:
    >>> from core.settings import Settings
    >>> from router.pipeline import Router
    >>> router = Router.from_settings(Settings())
    >>> result = router.route("What is a tort, and how do I reverse a list in Python?")
    >>> for s in result.subtasks:
    ...     print(s.text, "->", s.expert, round(s.scores[0].TE, 3))
"""
