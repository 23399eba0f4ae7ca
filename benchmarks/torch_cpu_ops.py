"""Per-float cost of the torch CPU ops that NHP's and AttNHP's fast paths avoid or prefer (issue 6, README §9).

    OMP_NUM_THREADS=1 python benchmarks/torch_cpu_ops.py [--out torch_cpu_ops.json]   # JSON under benchmarks/results/

One thread, float32, a [16, 50, 20, 32] tensor (one chunk of NHP's intensity kernel: 16 sequences x 50 events
x 20 integral points x 32 cells), median of ``--repeats`` timed calls after a warm-up. Rows:
- exp, exp2, sigmoid, tanh and tanh through one sigmoid, out of place;
- ``addcmul`` with the two [16, 50, 1, 32] operands first, and with the full tensor between them (the same sum);
- a [3, 256, 50, 20] tensor divided by, and multiplied by, a per-row [3, 1, 1, 1] scale (NHP's scaled softplus);
- batched [S, K] @ [K, H] products of 12,800 tiny matrices against one flat [12,800 S, K] @ [K, H] matmul.
Pause other jobs while it runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine, write_json


def median_us(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=None, help="JSON file name under benchmarks/results/")
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = -3 * torch.rand(16, 50, 20, 32, generator=g)
    b1, b2 = torch.rand(16, 50, 1, 32, generator=g), torch.rand(16, 50, 1, 32, generator=g)
    lam, beta = torch.rand(3, 256, 50, 20, generator=g), torch.rand(3, 1, 1, 1, generator=g) + 0.5
    gs, w = torch.rand(12800, 20, 3, generator=g), torch.rand(3, 32, generator=g)
    rows = {
        "exp": (lambda: torch.exp(x), x.numel()),
        "exp2": (lambda: torch.exp2(x), x.numel()),
        "sigmoid": (lambda: torch.sigmoid(x), x.numel()),
        "tanh": (lambda: torch.tanh(x), x.numel()),
        "tanh as 2 sigmoid(2x) - 1": (lambda: torch.sigmoid(x * 2).mul_(2).sub_(1), x.numel()),
        "addcmul(broadcast, broadcast, full)": (lambda: torch.addcmul(b1, b2, x), x.numel()),
        "addcmul(broadcast, full, broadcast)": (lambda: torch.addcmul(b1, x, b2), x.numel()),
        "divide by a per-row scale": (lambda: lam / beta, lam.numel()),
        "multiply by its reciprocal": (lambda: lam * beta.reciprocal(), lam.numel()),
        "12,800 batched [20, 3] @ [3, 32]": (lambda: gs @ w.expand(12800, 3, 32), 12800 * 20 * 32),
        "one [256,000, 3] @ [3, 32]": (lambda: gs.view(-1, 3) @ w, 12800 * 20 * 32),
    }
    out = {}
    print("| op | us per call | ns per output float |\n|---|---|---|")
    for name, (fn, n) in rows.items():
        us = median_us(fn, a.repeats)
        out[name] = {"us": us, "ns_per_float": us * 1e3 / n, "floats": n}
        print(f"| {name} | {us:.0f} | {us * 1e3 / n:.3f} |")
    if a.out:
        write_json(a.out, {"machine": machine(), "torch": torch.__version__, "repeats": a.repeats, "ops": out})


if __name__ == "__main__":
    main()
