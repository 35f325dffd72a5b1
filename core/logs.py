"""Structured logging: ``key=value`` text or one JSON object a line (``QSEF_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.makeLogRecord({})))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{line} {extras}" if extras else line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners and daemons swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


#: Top-level logger names that are this project's own; every other logger is a third-party library's.
OWN_LOGGERS = frozenset(
    {"api", "benchmarks", "core", "corpora", "distill", "experts", "kg", "qsef", "router", "root", "__main__"}
)


class _LevelFilter(logging.Filter):
    """Our records at ``level`` and above; third-party records at WARNING and above unless ``level`` is DEBUG.

    Filtering at the handler is what keeps them out: some libraries set their own logger to DEBUG (bm25s
    does at import), and such records reach the root handler whatever the root logger's level is.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.library_level = level if level <= logging.DEBUG else max(level, logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.partition(".")[0] in OWN_LOGGERS
        return record.levelno >= (self.level if own else self.library_level)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once (to stderr, so stdout stays clean for ``--json`` output).

    Library logs (bm25s, faiss, httpx, transformers ...) below WARNING stay off the console unless
    ``level`` is DEBUG; so do the Hugging Face libraries' progress bars (``HF_HUB_DISABLE_PROGRESS_BARS``, unless
    the environment sets it), while the project's own progress bars (:mod:`core.progress`) stay on.
    """
    import os

    lvl = logging.getLevelName(level) if isinstance(level, str) else level
    if lvl > logging.DEBUG:  # transformers' "Loading weights" bars and the hub's download bars (read at their import)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(_LevelFilter(logging.getLevelName(level) if isinstance(level, str) else level))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "urllib3", "filelock", "transformers", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
