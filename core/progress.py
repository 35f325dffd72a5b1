"""Progress bars for steps that take more than a few seconds (corpus and profile builds, setup).

A plain ``tqdm`` bar redraws only when it is updated, so one long step looks like a hang. The bar
:func:`progress` returns is also redrawn every second from a background thread, so its elapsed time keeps
moving, and log records emitted meanwhile are written above it instead of through it.

Example:
    >>> with progress(total=5, desc="expert profiles") as bar:   # doctest: +SKIP
    ...     for domain in domains:
    ...         bar.set_postfix_str(domain)
    ...         build(domain)
    ...         bar.update(1)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def progress(
    *, total: int | None, desc: str, unit: str = "step", enabled: bool | None = None, tick: float = 1.0
) -> Iterator[Any]:
    """A ``tqdm`` bar on stderr that redraws every ``tick`` seconds while the block runs.

    Args:
        total: number of units of work (``None``: unknown; the bar counts and shows the elapsed time).
        desc: what is being done (the bar's label).
        unit: name of one unit.
        enabled: ``True`` always shows the bar, ``False`` never, ``None`` only when stderr is a terminal.
        tick: seconds between redraws.

    Yields:
        the ``tqdm`` bar (``update``, ``set_postfix_str``).
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=None if enabled is None else not enabled)
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(tick):
            bar.refresh()

    ticker = threading.Thread(target=redraw, name=f"progress:{desc}", daemon=True)
    with bar, logging_redirect_tqdm():
        if not bar.disable:
            ticker.start()
        try:
            yield bar
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
