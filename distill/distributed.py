"""Data-parallel training of the distillation recipe (``torchrun`` or ``accelerate launch``, DDP).

A launcher starts one process per rank and gives each ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the
rendezvous address in its environment. :class:`Distributed` reads them; with ``WORLD_SIZE`` unset or 1
every method is a no-op and the recipe runs exactly as in one process.

    $ torchrun --nproc_per_node 2 -m api.cli distill distill/configs/law.yaml optim.steps=50

How the recipe splits one optimisation step over ``W`` ranks:

* Every rank prepares the same data (windows, kept vocabulary, teacher top-k, encoder embeddings):
  rank 0 first, so a cold teacher pass runs once and fills the cache the others then read
  (:meth:`Distributed.main_first`). The samplers are seeded alike, so every rank draws the same
  global batch of ``optim.batch_size`` window indices; rank ``r`` trains on the ``r``-th contiguous
  slice (:func:`shard_indices`), and its teacher targets are the rows of those same indices. The
  global batch and the number of steps are those of the one-process run.
* The student and the loss's alignment heads are one module wrapped in ``DistributedDataParallel``
  (DDP broadcasts rank 0's initial weights, then averages the gradients). The loss terms are
  normalised by the *global* batch (:func:`shard_scale`): token means by the batch's target tokens,
  the resistance-weighted term by the batch's resistance sum. The averaged gradient is then the
  one-process gradient, up to the order of float sums.
* The per-sample losses (for the loss-aware sampler) and the step loss are gathered, so samplers and
  logs see the global batch; held-out evaluation splits the windows over the ranks and sums.
* Only rank 0 writes checkpoints, ``expert.json``, the profile and the registry entry, and shows the
  progress bar and INFO logs; the others wait at a barrier. With a wall-clock budget, rank 0's clock
  decides when training stops and where the schedules are.

Backend: ``distributed.backend: null`` picks ``nccl`` (one GPU per rank, ``cuda:LOCAL_RANK``) when CUDA
is available, else ``gloo`` on CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")


class DistributedError(RuntimeError):
    """A launcher environment or a data-parallel setting that cannot work; the message says which and why."""


def shard_indices(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of a global batch ``indices`` (B,) -> (B / world_size,).

    The slices of ranks ``0 .. world_size - 1`` are disjoint, equally sized and, concatenated in rank
    order, give ``indices`` back (so a gather in rank order restores the batch order).

    Raises:
        ValueError: ``world_size`` does not divide the batch, or ``rank`` is outside ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    n = indices.shape[0]
    if n % world_size:
        raise ValueError(f"a batch of {n} cannot be split evenly over {world_size} ranks; "
                         f"use a batch size divisible by {world_size}")
    size = n // world_size
    return indices[rank * size:(rank + 1) * size]


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s part ``[lo, hi)`` of ``range(n)``, near-equal contiguous parts (for evaluation sums)."""
    lo = n * rank // world_size
    return lo, n * (rank + 1) // world_size


def shard_scale(valid: torch.Tensor, weights: torch.Tensor, mine: torch.Tensor, world_size: int) -> dict[str, float]:
    """Multipliers that turn a rank's shard means into its share of the global batch means.

    DDP averages the ranks' gradients, so each rank's loss must be ``world_size`` times its part of
    the global mean: ``W * sum_shard / sum_global`` = ``(shard mean) * W * n_shard / n_global``.

    Args:
        valid: (B, T) target mask of the global batch (token-mean terms: KD).
        weights: (B,) per-sample weights of the global batch (the resistance-weighted term; ones when
            resistance weighting is off).
        mine: (B,) bool, the rows of this rank's shard.
        world_size: number of ranks.
    Returns:
        ``{"kd": ..., "resist": ...}`` for :class:`distill.losses.TotalLoss` ``scale`` (the alignment
        term is a mean over equally sized shards and needs none).
    """
    n_all = float(valid.sum())
    r_all = float(weights.sum())
    kd = world_size * float(valid[mine].sum()) / max(n_all, 1.0)
    resist = world_size * float(weights[mine].sum()) / r_all if r_all > 0 else 1.0
    return {"kd": kd, "resist": resist}


@dataclass
class Distributed:
    """This process's place in a data-parallel run (rank 0 of 1 outside a launcher).

    Args:
        world_size, rank, local_rank: as the launcher sets them (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).
        backend: ``gloo`` | ``nccl`` | None (with several ranks: nccl when CUDA is available, else gloo).
        timeout_minutes: how long a collective waits (rank 0's cold teacher pass happens while the
            others wait at a barrier, so it must cover that).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    timeout_minutes: float = 60.0
    _owns_group: bool = field(default=False, init=False, repr=False)
    _log_level: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend is None and self.world_size > 1:  # one process never asks for CUDA
            self.backend = "nccl" if torch.cuda.is_available() else "gloo"
        if self.backend is not None and self.backend not in BACKENDS:
            raise DistributedError(f"distributed.backend {self.backend!r}; allowed: {', '.join(BACKENDS)} or null")
        if not 0 <= self.rank < self.world_size:
            raise DistributedError(f"RANK={self.rank} outside [0, WORLD_SIZE={self.world_size})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, backend: str | None = None,
                 timeout_minutes: float = 60.0) -> Distributed:
        """From a launcher's environment; one process (rank 0 of 1) when ``WORLD_SIZE`` is unset or 1."""
        env = os.environ if environ is None else environ
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(backend=backend, timeout_minutes=timeout_minutes)
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; start the run with "
                                   "torchrun (or accelerate launch), which sets them")
        return cls(world, int(env["RANK"]), int(env["LOCAL_RANK"]), backend, timeout_minutes)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` under nccl, else the CPU (always the CPU in one process)."""
        return torch.device("cuda", self.local_rank) if self.enabled and self.backend == "nccl" else torch.device("cpu")

    # ---- lifetime

    def start(self) -> None:
        """Join the process group (once); ranks other than 0 keep ``distill`` logs at WARNING and above."""
        if not self.enabled or self._owns_group:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            if not torch.cuda.is_available() or torch.cuda.device_count() <= self.local_rank:
                raise DistributedError(f"backend nccl needs a GPU per rank; LOCAL_RANK={self.local_rank}, "
                                       f"{torch.cuda.device_count()} visible (use distributed.backend=gloo on CPU)")
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size,
                                    timeout=datetime.timedelta(minutes=self.timeout_minutes))
            self._owns_group = True
        if not self.is_main:
            logger = logging.getLogger("distill")
            self._log_level = logger.level
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        log.info("rank %d of %d (%s, %s)", self.rank, self.world_size, self.backend, self.device)

    def close(self) -> None:
        """Leave the process group this object joined (on success and on error alike)."""
        if self._log_level is not None:
            logging.getLogger("distill").setLevel(self._log_level)
            self._log_level = None
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False

    # ---- collectives (identity in one process)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling caches); the others run it once rank 0 is done."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(n, ...) on every rank -> (world_size * n, ...) in rank order (the same shape on every rank)."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def all_reduce_sum(self, *values: float) -> tuple[float, ...]:
        """Sums of python numbers over the ranks (float64)."""
        if not self.enabled:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def from_main(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    # ---- data and model

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (:func:`shard_indices`); the batch itself in one process."""
        return shard_indices(indices, self.rank, self.world_size) if self.enabled else indices

    def shard_range(self, n: int) -> tuple[int, int]:
        return shard_range(n, self.rank, self.world_size)

    def wrap(self, module: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
        """``DistributedDataParallel(module)`` under a launcher, else ``module`` itself.

        Buffers are synchronised once, at wrapping, not before every forward: the students' buffers
        (prime table, vocabulary map) never change. ``find_unused_parameters``: set it when some
        trainable parameter gets no gradient (an alignment head whose loss weight is 0); DDP otherwise
        fails at the second step.
        """
        if not self.enabled:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        no_forward_sync = ({"forward_sync_buffers": False}  # newer torch (2.13 here) deprecates broadcast_buffers
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters,
                                       **no_forward_sync)


class TrainStep(nn.Module):
    """The student and its loss as one module: ``forward(batch, ...) -> (loss terms, logits)``.

    One module so that DDP also averages the gradients of the loss's own parameters (the alignment
    heads), which live outside the student. In one process it is called as it is.

    Args:
        student: a :class:`distill.students.Student`; loss: a :class:`distill.losses.TotalLoss`.
        target: ``(batch, temperature, logits) -> dict`` of KD inputs for the loss, or None (no KD term).
    """

    def __init__(self, student: nn.Module, loss: nn.Module, target=None):
        super().__init__()
        self.student, self.loss, self.target = student, loss, target

    def forward(self, b: dict, temperature: float, *, resistance=None, scale: dict[str, float] | None = None):
        """``b``: a recipe batch (``input``/``labels``/``mask`` (B, T), ``embeddings`` {name: (B, D)}, ...).
        Returns the loss dict of :class:`distill.losses.TotalLoss` and the logits (B, T, V)."""
        logits, hidden = self.student(b["input"], return_hidden=True)
        target = self.target(b, temperature, logits) if self.target is not None else {}
        out = self.loss(logits, b["labels"], **target, student_hidden=hidden, teacher_embeddings=b["embeddings"] or None,
                        resistance=resistance, mask=b["mask"], temperature=temperature, scale=scale)
        return out, logits
