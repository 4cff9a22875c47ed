"""``admm-snn bench --arch SPEC``: seconds per ADMM iteration of a convolutional network, its FLOPs by
layer counted from the shapes, and the fraction of the machine's measured product rates it reaches.

For each N, one child process (as the dense bench) takes N N-MNIST-shaped samples (the real recordings
from ``--data-dir`` when there are enough, else random binary frames of the real density), starts the
conv solver (``conv_solver.init_state``: random weights, rate calibration, the forward states and the
output block), times the first iteration apart (it forms the first conv layer's patch Gram, kept from then
on) and then ``--iterations`` iterations (``conv_solver.iterate``, parallel schedule). The machine's rates
are measured in the same run: a large float32 ``torch.mm``, and ``conv2d`` on the first conv layer's own
shapes (kernel, channels, image size, a batch of 256 images), each the best of several repeats.

FLOPs of one iteration (:func:`conv_iteration_flops`; a product of an (m×k) and a (k×n) matrix is 2mkn,
a convolution 2·(output elements)·(C_in·k²), its adjoint the same, element-wise work not counted), per
hidden layer l with R = T·N rows (images):

- ``currents``: A_l a_{l-1} twice (the sweep's and the re-projection's);
- ``spikes``: the right-hand side Aᵀ_{l+1} c and the solve: through Woodbury's identity below a narrower
  dense layer (4kn + 2k² per row), the n×n Cholesky solve (2n²) below a wider one; below a conv layer
  either the direct solve through the pooled space (CᵀC from C_in·min(2k − 1, H_p)·min(2k − 1, W_p) probe
  images, two p×p Cholesky factors, 2p² per row; p = the pooled image's numbers) or CG (2 operator applications per CG iteration, the
  iterations the run took), as ``conv.spike_solve_method`` chooses;
- ``weights``: the cross sums C = Σ X P (and the patch Gram Σ PᵀP, except the first conv layer's, which
  is formed once) and the kernel's solve;
- the output block as in the dense count (joint solve on the flattened last hidden layer).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..admm.conv import probe_images
from ..admm.updates import low_rank
from ..arch import size
from .bench import _peak_rss, _rss_now, _sync, cpu_model, make_data, matmul_rate


def conv_layer_flops(layer, rows: int) -> float:
    """2·(output elements)·(C_in·k²) of a conv layer on ``rows`` images; 2·rows·n_in·n_out of a dense
    layer (on its pooled inputs)."""
    if layer.kind == "conv":
        return 2.0 * rows * size(layer.out_shape) * layer.in_shape[0] * layer.kernel ** 2
    return 2.0 * rows * size(layer.pooled_shape) * layer.n_out


def conv_iteration_flops(problem, T: int, N: int, settings, cg_iterations: dict | None = None) -> dict:
    """FLOPs of one conv-solver iteration by layer (``layer{l}``, 1-based hidden layers, and ``output``)
    and in total; ``cg_iterations``: layer → the CG iterations its spike block ran (t < T and t = T
    together), for the layers that feed a conv layer."""
    R = T * N
    net = problem.net
    L = len(net)
    out: dict[str, float] = {}
    for l in range(L - 1):
        layer, nxt = net[l], net[l + 1]
        f = 2 * conv_layer_flops(layer, R)  # currents: the sweep's and the re-projection's
        n = layer.n_out
        if nxt.kind == "conv":
            f += conv_layer_flops(nxt, R)  # Aᵀ c
            if problem.spike_method(l) == "direct":
                p = size(nxt.pooled_shape)
                probes = probe_images(tuple(nxt.pooled_shape), nxt.kernel)
                # CᵀC from the probe images (a convolution and its adjoint each), two Cholesky factors,
                # and the two triangular solves of every row
                f += 2 * conv_layer_flops(nxt, probes) + 2 * p ** 3 / 3 + 2.0 * R * p * p
            else:
                its = (cg_iterations or {}).get(l, 0)
                f += its * 2 * conv_layer_flops(nxt, R)  # each CG iteration: A then Aᵀ on every row
        else:
            k = nxt.n_out
            f += 2.0 * R * k * n  # Wᵀ c
            if low_rank((k, n), settings.beta, settings.spike_solver):
                f += R * (4.0 * k * n + 2.0 * k * k) + 2.0 * k * k * n + 2 * k ** 3 / 3
            else:
                f += R * 2.0 * n * n + 2.0 * k * n * n + 2 * n ** 3 / 3
        if layer.kind == "conv":
            m = layer.in_shape[0] * layer.kernel ** 2
            positions = R * layer.out_shape[1] * layer.out_shape[2]
            f += 2.0 * positions * m * layer.out_shape[0]  # C = Σ X P
            if l > 0:
                f += 2.0 * positions * m * m  # G = Σ PᵀP (the first layer's is formed once)
            f += m ** 3 / 3 + 2.0 * m * m * layer.out_shape[0]
        else:
            m = size(layer.pooled_shape)
            f += 2.0 * R * m * n + (2.0 * R * m * m if l > 0 else 0.0) + m ** 3 / 3 + 2.0 * m * m * n
        out[f"layer{l + 1}"] = f
    m, n = size(net[-1].pooled_shape), net[-1].n_out
    out["output"] = 2.0 * N * m * m + 2.0 * N * m * n + 2.0 * R * m + m ** 3 / 3 + 2.0 * m * m * n \
        + 2.0 * R * m * n + 4.0 * T * R * n
    out["total"] = sum(out.values())
    return out


def conv_rate(layer, device: str, batch: int = 256, repeats: int = 5) -> float:
    """Best FLOP/s of float32 ``conv2d`` with the conv layer's kernel, channels, stride and padding on a
    batch of random images of its (pooled) input shape."""
    import torch
    g = torch.Generator().manual_seed(0)
    C, H, W = layer.pooled_shape
    x = torch.rand(batch, C, H, W, generator=g).to(device)
    w = torch.randn(layer.out_shape[0], C, layer.kernel, layer.kernel, generator=g).to(device)
    flops = conv_layer_flops(layer, batch)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.nn.functional.conv2d(x, w, stride=layer.stride, padding=layer.padding)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return flops / best


def measure_conv(cfg: dict) -> dict:
    """One conv measurement (N samples, ``cfg["arch"]``) in this process; returns its record."""
    import torch
    from ..admm import conv_solver as CS
    from ..admm import solver as S
    from ..admm.settings import ADMMSettings
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = cfg["device"]
    N, T = cfg["N"], cfg["T"]
    rss0 = _rss_now()
    frames, labels, source, density = make_data(N, T, cfg["frames"], cfg.get("data_dir"), cfg.get("cache_dir"),
                                                device=device)
    settings = ADMMSettings(**dict(cfg.get("set", {})))
    problem = CS.conv_problem(cfg["arch"], (2, 34, 34), 10, spike_solve=cfg.get("spike_solve", "auto"))
    y = torch.nn.functional.one_hot(labels, 10).to(S.DTYPES[settings.dtype])
    gen = torch.Generator().manual_seed(settings.seed)
    cache = S.SolverCache()
    _sync(device)
    t0 = time.perf_counter()
    state = CS.init_state(frames, y, problem, settings, gen, cache)
    _sync(device)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    CS.iterate(state, frames, y, problem, settings, cache, gen)
    _sync(device)
    t_first = time.perf_counter() - t0
    times, cg = [], {}
    for _ in range(cfg["iterations"]):
        t0 = time.perf_counter()
        CS.iterate(state, frames, y, problem, settings, cache, gen)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cg = {l: sum(its for its, _ in log) for l, log in problem.cg_log.items()}
    peak = torch.cuda.max_memory_allocated() if str(device).startswith("cuda") else _peak_rss()
    sec = min(times) if times else t_first
    flops = conv_iteration_flops(problem, T, N, settings, cg)
    return {"N": N, "T": T, "arch": cfg["arch"], "sizes": problem.sizes, "source": source, "density": density,
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": str(device),
            "threads": torch.get_num_threads(), "init_s": t_init, "first_iteration_s": t_first,
            "iteration_s": times, "sec_per_iter": sec, "flops": flops, "cg_iterations": cg,
            "spike_solve": {l: problem.spike_method(l) for l in range(len(problem.net) - 1)
                            if problem.net[l + 1].kind == "conv"},
            "gflops_per_s": flops["total"] / sec / 1e9, "peak_bytes": peak, "rss_start": rss0}


def markdown(results: list[dict], mm_rate: float, conv_rates: dict, header: str) -> str:
    """bench.md of a conv run: one row per N, then the FLOPs of each layer."""
    rate_txt = ", ".join(f"{name} {r / 1e9:.1f} GFLOP/s" for name, r in conv_rates.items())
    best_conv = max(conv_rates.values()) if conv_rates else 0.0
    L = [header, "", f"Measured float32 torch.mm rate: {mm_rate / 1e9:.1f} GFLOP/s; float32 conv2d on the first "
         f"conv layer's shapes: {rate_txt or 'no conv layer'}.", "",
         "| N | s/iter | first iteration (s) | start (s) | GFLOP/iter | GFLOP/s | % fp32 mm | % conv2d | peak (GiB) |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            L.append(f"| {r['N']} | error: {r['error']} | | | | | | | |")
            continue
        g = r["gflops_per_s"]
        conv_pct = f"{100 * g * 1e9 / best_conv:.0f}%" if best_conv else "–"
        L.append(f"| {r['N']} | {r['sec_per_iter']:.2f} | {r['first_iteration_s']:.2f} | {r['init_s']:.1f} "
                 f"| {r['flops']['total'] / 1e9:.1f} | {g:.1f} | {100 * g * 1e9 / mm_rate:.0f}% | {conv_pct} "
                 f"| {r['peak_bytes'] / 2 ** 30:.2f} |")
    ok = [r for r in results if "error" not in r]
    if ok:
        r = ok[-1]
        solves = ", ".join(f"layer {int(l) + 1}: {m}" for l, m in r.get("spike_solve", {}).items()) or "none"
        L += ["", f"FLOPs of one iteration by layer at N = {r['N']} (GFLOP; spike blocks below a conv layer: "
              f"{solves}; their CG iterations: {r['cg_iterations'] or 'none'}):", "",
              "| part | GFLOP |", "|---|---:|"]
        L += [f"| {k} | {v / 1e9:.2f} |" for k, v in r["flops"].items()]
    return "\n".join(L) + "\n"


def run(args) -> int:
    """``admm-snn bench --arch SPEC``: one child per N, bench.md / bench.json into ``--out``."""
    import json
    import torch
    from ..admm import conv_solver as CS
    from .bench import _child, setting_overrides
    problem = CS.conv_problem(args.arch, (2, 34, 34), 10)  # a bad string: one line, before any child
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = setting_overrides(args.set)
    mm_rate = matmul_rate(args.device, "float32")
    conv_rates = {f"layer {l + 1} ({L.in_shape[0]}→{L.out_shape[0]}, {L.kernel}×{L.kernel})": conv_rate(L, args.device)
                  for l, L in enumerate(problem.net) if L.kind == "conv"}
    print(f"CPU: {cpu_model()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    results = []
    for N in args.n:
        cfg = {"N": N, "T": args.time_steps, "arch": args.arch, "set": overrides,
               "iterations": args.iterations, "frames": args.frames, "data_dir": args.data_dir,
               "cache_dir": args.cache_dir, "device": args.device, "threads": args.threads,
               "spike_solve": args.conv_spike_solve}
        r = _child(cfg, args.timeout, module="admm_snn.experiments.bench_conv")
        results.append(r)
        if "error" in r:
            print(f"N={N} {args.arch}: error: {r['error']}", flush=True)
        else:
            print(f"N={N} {args.arch}: {r['sec_per_iter']:.2f} s/iter, first iteration {r['first_iteration_s']:.2f} s, "
                  f"{r['gflops_per_s']:.1f} GFLOP/s", flush=True)
    header = (f"# admm-snn bench --arch {args.arch}\n\nCPU: {cpu_model()}; torch CPU capability: "
              f"{torch.backends.cpu.get_cpu_capability()}\n\nT={args.time_steps}, overrides={overrides}, "
              f"conv spike solve={args.conv_spike_solve}, "
              f"frames={args.frames}, device={args.device}, threads={torch.get_num_threads()}")
    (out / "bench.md").write_text(markdown(results, mm_rate, conv_rates, header))
    (out / "bench.json").write_text(json.dumps({"fp32_mm_flops": mm_rate, "conv2d_flops": conv_rates,
                                                "results": results}, indent=1))
    print((out / "bench.md").read_text())
    return 0


def child_main(argv: list[str]) -> int:
    """``python -m admm_snn.experiments.bench_conv --child JSON``: one measurement, one JSON line."""
    import json
    print(json.dumps(measure_conv(json.loads(argv[1]))))
    return 0


if __name__ == "__main__":  # the children of run(); the command is 'admm-snn bench --arch SPEC'
    import sys
    sys.exit(child_main(sys.argv[1:]))
