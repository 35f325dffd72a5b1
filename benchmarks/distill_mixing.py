"""Spectral (FFT) token mixing vs softmax attention: time and peak memory at sequence lengths 256..8192.

Time: both mixers interleaved in one process (1 torch thread), best of many repeats. Memory: each
(mixer, length) in a fresh subprocess so its peak RSS is its own.
Both mixers are the QRH student's modules at width 128 with 8 heads, batch 1, causal, forward only.

    .venv/bin/python benchmarks/distill_mixing.py [--lengths 256 512 ...] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mixer: str, length: int, repeats: int) -> dict:
    import resource
    import time

    import torch

    from experts.qrh import QRHConfig, SoftmaxAttention, SpectralMixing

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = QRHConfig(vocab_size=128, d_model=128, n_heads=8, max_seq_len=128, mixer=mixer)
    mod = (SpectralMixing(cfg) if mixer == "spectral" else SoftmaxAttention(cfg)).eval()
    x = torch.randn(1, length, 128)
    base = _rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t = time.perf_counter()
            mod(x)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = sorted(times[1:])
    return {"mixer": mixer, "length": length, "ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0],
            "peak_extra_mb": max(peak - base, 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--child", nargs=2, metavar=("MIXER", "LENGTH"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.repeats)))
        return
    import numpy as np
    from distill_common import save

    rows = []
    for length in args.lengths:
        for mixer in ("spectral", "attention"):  # peak memory: a fresh process per point
            out = subprocess.run([sys.executable, __file__, "--child", mixer, str(length), "--repeats", "1"],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    # time: both mixers in this process, interleaved, best (and median) of many repeats, so that
    # bursts of load from other jobs on the shared machine hit both alike
    import time

    import torch

    from experts.qrh import QRHConfig, SoftmaxAttention, SpectralMixing

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mods = {m: (SpectralMixing if m == "spectral" else SoftmaxAttention)(
        QRHConfig(vocab_size=128, d_model=128, n_heads=8, max_seq_len=128, mixer=m)).eval()
        for m in ("spectral", "attention")}
    by = {(r["mixer"], r["length"]): r for r in rows}
    with torch.inference_mode():
        for length in args.lengths:
            x = torch.randn(1, length, 128)
            times = {m: [] for m in mods}
            for m in mods:
                mods[m](x)  # warm-up
            for _ in range(args.repeats):
                for m, mod in mods.items():
                    t = time.perf_counter()
                    mod(x)
                    times[m].append(1000 * (time.perf_counter() - t))
            for m in mods:
                ts = sorted(times[m])
                by[(m, length)].update(ms=ts[len(ts) // 2], min_ms=ts[0], repeats=len(ts))
                print(by[(m, length)], flush=True)
    summary = {}
    for mixer in ("spectral", "attention"):
        r = [x for x in rows if x["mixer"] == mixer]
        slope = np.polyfit(np.log([x["length"] for x in r]), np.log([x["min_ms"] for x in r]), 1)[0]
        summary[mixer] = {"loglog_time_slope": float(slope)}
    by = {(x["mixer"], x["length"]): x for x in rows}
    summary["speedup"] = {str(n): by[("attention", n)]["min_ms"] / by[("spectral", n)]["min_ms"] for n in args.lengths}
    print(summary)
    save("distill_mixing", {"rows": rows, "summary": summary,
                            "setup": "width 128, 8 heads, batch 1, causal, forward, 1 thread; time: both mixers interleaved in one process, best of 15 (busy machine); memory: peak RSS above the pre-forward RSS, one fresh process per point"})


if __name__ == "__main__":
    main()
