#!/usr/bin/env python
"""What the first ADMM iteration costs beyond a later one: times the start as train() makes it (init_state,
then the input Gram: solver.prepare_input_gram), the first iterations (default settings, parallel
schedule) and, inside each, the input Gram (solver.input_gram, formed again only if the start had not)
and the Cholesky factorisations (updates.cholesky, with the input Gram's); prints one line per iteration. Data as ``admm-snn bench``
makes it (real N-MNIST recordings, or random binary frames with --inputs/--density).

    python bench/first_iteration.py --n 1000 --time-steps 30 --hidden 128
"""

from __future__ import annotations

import argparse
import time

import torch

from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.sparse_inputs import remember_density
from admm_snn.experiments.bench import DENSITY, N_INPUTS, cpu_model, make_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--time-steps", type=int, default=30)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--inputs", type=int, default=N_INPUTS)
    p.add_argument("--density", type=float, default=DENSITY)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames, labels, source, density = make_data(args.n, args.time_steps, "uint8", args.data_dir, args.cache_dir,
                                                n_inputs=args.inputs, density=args.density)
    print(f"CPU: {cpu_model()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
          f"threads: {torch.get_num_threads()}; data: {source} {tuple(frames.shape)}, density {density:.3f}")
    settings = ADMMSettings()
    y = torch.nn.functional.one_hot(labels, 10).float()
    cache = S.SolverCache()
    remember_density(cache, density)
    gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    state = S.init_state(frames, y, [frames.shape[2], args.hidden, 10], settings, gen, cache)
    t1 = time.perf_counter()
    S.prepare_input_gram(state, frames, settings, cache)  # the start of train(): the input Gram
    print(f"start: {time.perf_counter() - t0:.3f} s (of which input Gram {time.perf_counter() - t1:.3f} s)")
    spent: dict[str, float] = {}

    def timed(name, fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return run

    S.input_gram = timed("input_gram", S.input_gram)
    U.cholesky = timed("cholesky", U.cholesky)
    for i in range(args.iterations):
        spent.clear()
        t0 = time.perf_counter()
        S.iterate(state, frames, y, settings, cache, gen)
        total = time.perf_counter() - t0
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in sorted(spent.items()))
        print(f"iteration {i + 1}: {total:.3f} s ({parts})")
    print("kernels:", "; ".join(f"{k}: {v}" for k, v in sorted(cache.paths.items())))


if __name__ == "__main__":
    main()
