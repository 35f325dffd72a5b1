"""Hand-written evaluation sets shipped with the package (JSONL)."""
