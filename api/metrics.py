"""Prometheus metrics of one app instance (own registry, so several apps can live in one process).

Several workers (``qsef serve --workers N``): prometheus-client's multiprocess mode. The serve command
sets ``PROMETHEUS_MULTIPROC_DIR`` (a folder of the serve run directory, emptied at start) before the
workers start, so every worker's counters and histograms are memory-mapped files there; ``/metrics``
on any worker renders them all through a ``MultiProcessCollector`` — the sums over the workers, the
counts of a killed worker included.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    """Args:
    multiprocess_dir: ``PROMETHEUS_MULTIPROC_DIR`` of a multi-worker server: render every worker's values.
    """

    def __init__(self, multiprocess_dir: str | Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter("qsef_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("qsef_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                 registry=self.registry)
        self.decompositions = Counter("qsef_decompositions_total", "decompositions by path", ["path", "flagged"],
                                      registry=self.registry)
        self.expert_calls = Counter("qsef_expert_calls_total", "expert calls", ["expert", "ok"],
                                    registry=self.registry)
        self.fallbacks = Counter("qsef_expert_fallbacks_total", "sub-tasks answered by a next-best expert",
                                 registry=self.registry)
        self.score_batch = Histogram("qsef_score_batch_size", "texts per /v1/score encoder call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_route(self, result) -> None:
        self.decompositions.labels(result.decomposition_path, str(result.decomposition_flagged).lower()).inc()
        for sub in result.subtasks:
            for att in sub.attempts:
                if not att.skipped:
                    self.expert_calls.labels(att.expert, str(att.ok).lower()).inc()
            if sub.fell_back:
                self.fallbacks.inc()

    def render(self) -> bytes:
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=str(self.multiprocess_dir))
            return generate_latest(merged)
        return generate_latest(self.registry)
