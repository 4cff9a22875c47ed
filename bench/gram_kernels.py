#!/usr/bin/env python
"""Seconds of the input Gram G = Σ a aᵀ of random binary frames by each exact kernel of
admm_snn.admm.gram (sparse and dense float32, float64 reference) and, for comparison, torch's int8
product (torch._int_mm, which admm-snn no longer uses), on one thread; prints a markdown table with the
CPU model and torch's CPU capability. Run it once as it is and once under
``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` to see the AVX2 kernels.

    python bench/gram_kernels.py --rows 8192 --shape 2312:0.035 784:0.13 784:0.05 2312:0.1
"""

from __future__ import annotations

import argparse
import time

import torch

from admm_snn.admm import gram as GR
from admm_snn.admm.sparse_inputs import transposed_csr
from admm_snn.experiments.bench import cpu_model


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernels(a: torch.Tensor) -> dict:
    n = a.shape[1]
    csr_t = transposed_csr(a, torch.float32)

    def run(kind):
        acc = GR.ExactGram(n, 1, kind, a.device)
        acc.add_sparse(a, csr_t) if kind == "sparse-float32" else acc.add_dense(a)
        return acc.total()

    out = {k: (lambda k=k: run(k)) for k in ("sparse-float32", "dense-float32", "float64")}
    if hasattr(torch, "_int_mm"):
        ai = a.to(torch.int8)
        ai_t = ai.T.contiguous()
        out["int8 (torch._int_mm)"] = lambda: torch._int_mm(ai_t, ai)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=8192, help="(t, sample) rows (default 8192)")
    p.add_argument("--shape", nargs="+", default=["2312:0.035", "784:0.13"], metavar="INPUTS:DENSITY")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"CPU: {cpu_model()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
          f"threads: {torch.get_num_threads()}; rows: {args.rows}\n")
    rows = []
    for spec in args.shape:
        n, d = spec.split(":")
        a = (torch.rand(args.rows, int(n), generator=g) < float(d)).to(torch.uint8)
        ref = a.double().T @ a.double()
        times = {}
        for name, fn in kernels(a).items():
            if name != "int8 (torch._int_mm)":
                assert torch.equal(fn().to(torch.float64), ref), name  # every exact kernel is exact
            times[name] = best_of(fn, args.repeats)
        rows.append((n, d, GR.kernel(1, float(d)), times))
    names = list(rows[0][3])
    print("| inputs | density | rule's kernel | " + " | ".join(f"{k} s" for k in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for n, d, chosen, times in rows:
        print(f"| {n} | {d} | {chosen} | " + " | ".join(f"{times[k]:.3f}" for k in names) + " |")


if __name__ == "__main__":
    main()
