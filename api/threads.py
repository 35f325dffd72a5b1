"""One native-thread budget for the server process: BLAS and OpenMP pools sized like torch's.

``settings.torch_threads`` sizes torch's intra-op pool, but numpy's OpenBLAS (and any other OpenMP
library) starts one thread per core on its own. The server runs each request, or each micro-batch, in
a worker thread; with several of them doing matrix products at once (QSEF's history neighbour search
is a ``(T, 384) @ (384, N)`` product per expert) a 2-core box runs 2 x workers BLAS threads that
spin-wait on each other. Measured on the 2-core development machine: one ``/v1/score`` call took
128 ms with the default pools and 39 ms with one BLAS thread, and 8 concurrent unbatched calls fell
from 26 to 2.4 requests/s. So the lifespan caps every pool at ``torch_threads`` once the libraries
are loaded.

Example:
    >>> limit_native_threads(1)
    {'blas': 1, 'openmp': 1}
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def limit_native_threads(threads: int) -> dict[str, int]:
    """Cap the BLAS and OpenMP pools loaded in this process at ``threads`` each.

    Only libraries already loaded are affected, so call it after the encoder (torch) and numpy are
    imported. Without ``threadpoolctl`` (a dependency of scikit-learn, which sentence-transformers
    pulls in) nothing changes and a warning says so.

    Returns:
        ``{user_api: threads}`` of the pools now in effect (empty when nothing could be limited).
    """
    import numpy  # noqa: F401 - loads OpenBLAS so it is found below

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed; BLAS/OpenMP pools keep one thread per core, which "
                    "oversubscribes the CPU when several requests run at once")
        return {}
    threadpool_limits(limits=threads)
    return {p["user_api"]: p["num_threads"] for p in threadpool_info()}
