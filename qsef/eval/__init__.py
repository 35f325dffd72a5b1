"""Routing evaluation: does QSEF send each text to the expert of its domain?

A routing set is rows ``{"text", "domain"}``. :func:`qsef.eval.routing.evaluate` routes every text with
one *method* and reports ``{"n", "accuracy", "per_domain"}`` (per-domain accuracy = recall of that
domain). Methods share one interface (``fit`` on labelled rows, ``predict`` domains) and one registry,
so QSEF is measured against the baselines in the same run, on the same folds:

* ``qsef`` — argmax TE with fold-fitted weights (conditional logit), centroids that blend the domain
  corpus with the training questions, BM25 over the domain corpora, graph distance, feedback history;
* ``centroid`` — nearest mean embedding of the training questions per domain;
* ``knn`` — cosine k-nearest-neighbour vote over the training questions;
* ``zeroshot`` — nearest embedding of a one-line description of each domain;
* ``llm`` — an in-process instruction model picks the domain (label log-likelihood);
* ``random`` — uniform guess (seeded).

Example:
    >>> from qsef.eval.routing import evaluate, load_rows
    >>> rows = load_rows("routing_heldout.jsonl")
    >>> evaluate(rows, method="centroid", train=mmlu_rows)["accuracy"]
"""
