"""Data-parallel distillation (``distill.distributed``): the sharding helpers, the global-batch loss
normalisation, and ``torchrun --nproc_per_node 2`` (gloo) reproducing the one-process run."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distill_fixtures import synthetic_prepared, tiny_config

from core.settings import Settings
from distill.distributed import Distributed, DistributedError, shard_indices, shard_range, shard_scale
from distill.losses import AlignmentLoss, KDLoss, TotalLoss
from distill.recipe import ConfigError, DistillRecipe

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_shard_indices_are_disjoint_equal_and_cover_the_batch(world):
    batch = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(0))  # repeats, as with replacement
    shards = [shard_indices(batch, r, world) for r in range(world)]
    assert [len(s) for s in shards] == [8 // world] * world
    assert torch.equal(torch.cat(shards), batch)  # covering, and rank order is batch order
    positions = [set(shard_indices(torch.arange(8), r, world).tolist()) for r in range(world)]
    assert set().union(*positions) == set(range(8)) and sum(map(len, positions)) == 8  # disjoint


def test_shard_indices_refuses_uneven_batches_and_bad_ranks():
    with pytest.raises(ValueError, match="divisible by 4"):
        shard_indices(torch.arange(6), 0, 4)
    with pytest.raises(ValueError, match="outside"):
        shard_indices(torch.arange(4), 2, 2)


@pytest.mark.parametrize(("n", "world"), [(16, 2), (17, 4), (3, 4), (0, 2)])
def test_shard_range_covers_range(n, world):
    parts = [shard_range(n, r, world) for r in range(world)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_shard_scaled_losses_average_to_the_global_loss_and_gradient():
    """What DDP computes (the mean over ranks of each rank's scaled shard loss, and of its gradient)
    equals the one-process loss and gradient, with padding and resistance differing between shards."""
    g = torch.Generator().manual_seed(0)
    B, T, V, C, D, W = 8, 5, 11, 6, 4, 2
    hidden = torch.randn(B, T, C, generator=g)
    head = torch.nn.Linear(C, V)
    teacher = torch.randn(B, T, V, generator=g)
    emb = torch.randn(B, D, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2:] = False
    mask[5, 4:] = False
    labels = labels.masked_fill(~mask, -100)
    resistance = torch.rand(B, generator=g)
    loss = TotalLoss(KDLoss(), {"enc": AlignmentLoss(C, D)}, lambda_align=0.3, lambda_resist=0.7)

    def loss_and_grad(rows, scale=None):
        head.zero_grad()
        loss.zero_grad()
        out = loss(head(hidden[rows]), labels[rows], teacher[rows], student_hidden=hidden[rows],
                   teacher_embeddings={"enc": emb[rows]}, resistance=resistance[rows], mask=mask[rows],
                   temperature=2.0, scale=scale)
        out["loss"].backward()
        grads = [p.grad.clone() for p in [*head.parameters(), *loss.parameters()]]
        return out["loss"].detach(), grads

    full, full_grads = loss_and_grad(torch.arange(B))
    parts = []
    for r in range(W):
        rows = shard_indices(torch.arange(B), r, W)
        mine = torch.zeros(B, dtype=torch.bool)
        mine[rows] = True
        parts.append(loss_and_grad(rows, shard_scale(mask, resistance, mine, W)))
    assert torch.allclose(sum(p[0] for p in parts) / W, full, rtol=1e-5)
    for i, grad in enumerate(full_grads):
        assert torch.allclose(sum(p[1][i] for p in parts) / W, grad, rtol=1e-4, atol=1e-6)
    unscaled = sum(loss_and_grad(shard_indices(torch.arange(B), r, W))[0] for r in range(W)) / W
    assert not torch.allclose(unscaled, full, rtol=1e-4)  # plain shard means would not match


def test_distributed_from_env():
    one = Distributed.from_env({})
    assert not one.enabled and one.is_main and one.device.type == "cpu"
    assert one.shard(torch.arange(6)).tolist() == list(range(6)) and one.all_reduce_sum(1.0, 2) == (1.0, 2)
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}
    two = Distributed.from_env(env, backend="gloo")
    assert two.enabled and not two.is_main and two.device.type == "cpu"
    assert two.shard(torch.arange(6)).tolist() == [3, 4, 5]
    with pytest.raises(DistributedError, match="RANK"):
        Distributed.from_env({"WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="allowed: gloo, nccl"):
        Distributed.from_env(env, backend="mpi")


def test_recipe_refuses_a_batch_that_the_ranks_cannot_share(tmp_path):
    dist = Distributed(world_size=4, rank=0, backend="gloo")
    r = DistillRecipe(tiny_config(tmp_path, "optim.batch_size=6"), settings=Settings(home=tmp_path),
                      prepared=synthetic_prepared(), dist=dist)
    with pytest.raises(ConfigError, match="divisible by the 4 ranks"):
        r.setup()  # before joining any process group


def _run(cmd: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QSEF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_torchrun_two_ranks_reproduce_the_one_process_run(tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo, 1 thread per rank) trains the tiny recipe like one process.

    Same config, seed, data and global batch (8 windows, 4 per rank) for 40 steps, with every loss
    term on (KD, alignment, resistance weighting), the loss-aware sampler (it needs the gathered
    per-sample losses) and padding in one window (the shards then hold different token counts,
    which the global-batch normalisation has to absorb).

    Tolerance: the sharded loss is the one-process loss exactly (``shard_scale``; checked on its own
    by ``test_shard_scaled_losses_average_to_the_global_loss_and_gradient``), so the two runs differ
    only in the order of float sums (per-shard matmuls, gloo's all-reduce of the gradients). Measured
    here (2026-12-01, this recipe): at most 2.3e-7 relative on any of the 40 step losses, 3e-7 on the
    held-out perplexities, 1.8e-7 absolute on the weights. The bounds (1e-4 on the step losses, 1e-5 on
    the perplexities and weights) leave 40-400x room for other CPUs' float noise and still catch real
    mistakes: plain per-shard means instead of the global-batch normalisation move the step losses by
    up to 3e-3 (median 3e-4), the perplexities by 3e-4-1.4e-3 and the weights by 1e-2; another seed
    moves the step losses by up to 3e-2.
    """
    config = tmp_path / "tiny.yaml"
    config.write_text("domain: law\n")
    common = ["optim.steps=40", "optim.batch_size=8", "optim.warmup=4", "eval.every=10", "checkpoint.every=20",
              "sampler.name=loss", "seed=3"]
    one = _run([sys.executable, WORKER, config, tmp_path / "one", *common], tmp_path)
    assert one.returncode == 0, one.stderr[-4000:]
    two = _run([TORCHRUN, "--standalone", "--nproc_per_node", "2", WORKER, config, tmp_path / "two", *common],
               tmp_path)
    assert two.returncode == 0, two.stderr[-4000:]

    reports = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # rank 0 prints the result, rank 1 stays quiet
    state = {k: json.loads((tmp_path / k / "expert" / "trainer_state.json").read_text()) for k in ("one", "two")}
    a, b = (torch.tensor(state[k]["train_loss"], dtype=torch.float64) for k in ("one", "two"))
    assert len(a) == len(b) == 40 and torch.isfinite(a).all()
    assert ((a - b).abs() / a.abs()).max() < 1e-4, (a, b)
    assert a[-1] < a[0]  # it trains
    for ha, hb in zip(state["one"]["history"], state["two"]["history"], strict=True):
        assert ha["step"] == hb["step"] and ha["tokens"] == hb["tokens"]  # the held-out windows, split and summed
        assert hb["ppl"] == pytest.approx(ha["ppl"], rel=1e-5)
    assert state["one"]["tokens_seen"] == state["two"]["tokens_seen"]  # global tokens, not rank 0's

    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / k / "expert" / "model.safetensors")) for k in ("one", "two"))
    assert all(torch.allclose(wa[n], wb[n], rtol=1e-5, atol=1e-5) for n in wa)

    writes = {k: (tmp_path / k / "writes.log").read_text().split("\n")[:-1] for k in ("one", "two")}
    assert writes["one"] == ["0 checkpoint", "0 checkpoint", "0 register"]  # step 20, the end, the registry
    assert writes["two"] == writes["one"]  # only rank 0 wrote, as often as one process
    from experts.registry import ExpertRegistry

    registry = ExpertRegistry(tmp_path / "two" / "experts.sqlite")
    assert registry.names() == ["law-qrh"]
    registry.close()


@pytest.mark.slow
def test_torchrun_error_after_joining_the_group_exits_cleanly(tmp_path):
    """A config error raised on every rank after the process group is up: both ranks leave the group
    and exit with the CLI's error code instead of hanging in a collective."""
    config = tmp_path / "tiny.yaml"
    config.write_text("domain: law\n")
    two = _run([TORCHRUN, "--standalone", "--nproc_per_node", "2", WORKER, config, tmp_path / "two",
                "model.d_model=30"], tmp_path)  # QRHConfig refuses it when the student is built
    assert two.returncode != 0
    assert "qsef: error" in two.stderr and "d_model=30" in two.stderr
    assert not (tmp_path / "two" / "writes.log").exists()
