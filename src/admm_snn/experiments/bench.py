"""``admm-snn bench``: seconds per ADMM iteration of both schedules, FLOP rate and peak memory.

For each N, one child process per schedule builds N-MNIST-shaped data (the real recordings from
``--data-dir`` when N is at most their number, else random binary frames with the real data's density,
about 3.5%; or, with ``--inputs`` other than 2312, random binary frames of that width and ``--density``,
e.g. ``--inputs 784 --density 0.13`` for rate-coded MNIST), starts the solver, times the first
iteration apart (the start forms the fixed input Gram, as train() does; the first iteration factorises it), then times ``--iterations`` iterations. Each
child reports the CPU model, the CPU capability torch dispatches to
(``torch.backends.cpu.get_cpu_capability()``), the kernel each product took (the solver's
``cache.paths``: the input Gram's exact kernel, dense or sparse input products, the cross sums' dtype),
its seconds per iteration, the FLOPs of an iteration counted from the shapes (:func:`iteration_flops`), a breakdown of the time by block (from one
further iteration with timers around the solver's functions) and its peak memory: on CPU the
high-water mark of the resident set (VmHWM) of a child process per measurement, so the peaks do not mix
(ru_maxrss would not do: Linux carries it over fork and exec from the parent); on CUDA
``torch.cuda.max_memory_allocated``.

The sequential schedule costs the same products per iteration as the parallel one, plus a loop over t;
it may be measured on fewer iterations (``--seq-iterations``) and, beyond ``--seq-max-n`` samples, on a
random subset of ``--seq-max-n`` samples, its time then scaled by N / subset (the cost of an iteration is
linear in N; the table says when a row was scaled).

The machine's float32 matrix-product rate is measured in the same run (best of several large torch.mm)
and the achieved rate of each iteration is its counted FLOPs over its time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DENSITY = 0.035
N_INPUTS = 2312


# ----------------------------------------------------------------------------------------------------
# FLOPs counted from the shapes
# ----------------------------------------------------------------------------------------------------

def iteration_flops(sizes: list[int], T: int, N: int, settings, first: bool = False,
                    density: float | None = None) -> dict:
    """Floating-point operations of one iteration, by part, counted from the shapes (a product of an
    (m×k) and a (k×n) matrix is 2mkn; a Cholesky solve with an n×n factor is 2n² per right-hand side; a
    factorisation n³/3; a spike block solved through Woodbury's identity, where the next layer has k < n/2
    neurons, 4kn + 2k² per right-hand side). Element-wise work (potentials, thresholds, clipping) is not counted. Parts in
    the gram dtype are named ``*_gram``; the cross sums C = Σ x aᵀ, ``*_cross``, are in the gram dtype
    only when ``cross_dtype`` equals it (``total_gram`` counts them then). When the products with the
    frames use their CSR form (``input_format``, frames of ``density``), those products
    count 2·nnz·n_1 (nnz = density·T·N·n_0) instead of 2·T·N·n_0·n_1. ``first``: add the input Gram (formed
    once, at the start of a run: solver.prepare_input_gram)."""
    from ..admm.sparse_inputs import uses_sparse
    from ..admm.updates import low_rank
    L = len(sizes) - 1
    K = T * N
    sparse = uses_sparse(settings, density)
    par = settings.schedule == "parallel"
    reproj = bool(settings.reproject)
    f = {"u": 0.0, "spike_rhs": 0.0, "spike_solve": 0.0, "spike_setup": 0.0, "weights_gram": 0.0,
         "weights_cross": 0.0, "output_cross": 0.0, "weights_solve": 0.0, "reproject": 0.0, "output": 0.0, "output_gram": 0.0, "box": 0.0}
    for l in range(1, L):  # hidden layers (1-based)
        m, n, nxt = sizes[l - 1], sizes[l], sizes[l + 1]
        rows = K * density if (sparse and l == 1) else K  # the multiply-adds of a product with a_{l-1}
        # the parallel schedule reuses the currents of the re-projection when it does not chunk
        cached = par and reproj and (not settings.chunk_size or settings.chunk_size >= N)
        if not cached:
            f["u"] += 2 * rows * m * n
        f["spike_rhs"] += 2 * K * nxt * n
        if low_rank((nxt, n), settings.beta, settings.spike_solver):  # Woodbury's identity
            f["spike_solve"] += 2 * K * nxt * n * 2 + 2 * K * nxt * nxt  # W b, Wᵀ y and the k×k solves
            f["spike_setup"] += 2 * nxt * nxt * n + 2 * nxt ** 3 / 3
        else:
            f["spike_solve"] += 2 * K * n * n
            f["spike_setup"] += 2 * nxt * n * n + 2 * n ** 3 / 3
        if settings.spike_solver == "box":
            f["box"] += settings.box_iterations * 3 * 2 * K * n * n
        f["weights_cross"] += 2 * rows * m * n  # C = Σ x aᵀ
        if l > 1:
            f["weights_gram"] += 2 * K * m * m + m ** 3 / 3  # G = Σ a aᵀ and its factor
        elif first:
            f["weights_gram"] += 2 * K * m * m + m ** 3 / 3
        f["weights_solve"] += 2 * m * m * n
        if reproj:
            f["reproject"] += 2 * rows * m * n
    m, n = sizes[L - 1], sizes[L]
    if par and settings.output_solve == "joint":
        f["output_gram"] += 2 * N * m * m + 2 * N * m * n + 2 * K * m  # G_S, C_S, leaky sums
        f["output"] += m ** 3 / 3 + 2 * m * m * n + 2 * K * m * n + 4 * T * K * n  # factor, solve, u, T×T
    else:
        f["output_gram"] += 2 * K * m * m
        f["output_cross"] += 2 * K * m * n
        f["output"] += m ** 3 / 3 + 2 * m * m * n + 2 * K * m * n
        f["output"] += 4 * T * K * n if (par and settings.output_solve == "potentials") else 0
    if settings.dual:
        f["output"] += 2 * N * m * n
    f["total"] = sum(f.values())
    f["total_gram"] = f["weights_gram"] + f["output_gram"]
    if settings.cross_product_dtype == settings.gram_dtype:
        f["total_gram"] += f["weights_cross"] + f["output_cross"]
    return f


# ----------------------------------------------------------------------------------------------------
# Machine measurements
# ----------------------------------------------------------------------------------------------------

def matmul_rate(device: str, dtype_name: str = "float32", size: int | None = None, repeats: int = 5) -> float:
    """Best FLOP/s of a large square torch.mm on ``device``."""
    import torch
    dt = getattr(torch, dtype_name)
    size = size or (8192 if str(device).startswith("cuda") else 2048)
    a = torch.randn(size, size, dtype=dt, device=device)
    b = torch.randn(size, size, dtype=dt, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def _sync(device) -> None:
    import torch
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _peak_rss() -> int:
    """Peak resident memory of this process: VmHWM from /proc/self/status (the high-water mark of this
    program's own memory map, which starts afresh at exec). ``ru_maxrss`` is not used for the child
    processes: Linux carries it over fork and exec, so a child's value is at least the parent's
    resident size when it was started. Falls back to ru_maxrss where /proc is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------

def _default_data_dir() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data" / "nmnist"
        if (cand / "Train").is_dir():
            return cand
    return None


def make_data(N: int, T: int, frames_dtype: str, data_dir, cache_dir, seed: int = 0, device: str = "cpu",
              n_inputs: int = N_INPUTS, density: float = DENSITY):
    """(frames (T, N, n_inputs), labels, source, density): real N-MNIST when the width is N-MNIST's and
    it has at least N recordings, else random binary frames of ``density`` (generated in chunks,
    straight into the stored dtype)."""
    import torch
    root = Path(data_dir) if data_dir else _default_data_dir()
    if n_inputs == N_INPUTS and root is not None and (Path(root) / "Train").is_dir():
        from ..data import FrameSettings, load_nmnist
        ds = load_nmnist(root, "train", FrameSettings(time_steps=T, bin_ms=10.0), cache_dir=cache_dir)
        if len(ds) >= N:
            density = float(ds.frames.sum(dtype=torch.int64)) / ds.frames.numel()
            idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:N] if len(ds) > N \
                else torch.arange(N)
            labels = ds.labels[idx]
            frames = ds.frames[idx]
            del ds
            frames = frames.permute(1, 0, 2).contiguous()
            frames = frames.to(torch.uint8) if frames_dtype == "uint8" else frames.to(torch.float32)
            return frames.to(device), labels.to(device), "real", density
    g = torch.Generator().manual_seed(seed)
    dt = torch.uint8 if frames_dtype == "uint8" else torch.float32
    frames = torch.empty(T, N, n_inputs, dtype=dt, device=device)
    step = max(1, (1 << 24) // (T * n_inputs))
    for s in range(0, N, step):
        e = min(s + step, N)
        frames[:, s:e] = (torch.rand(T, e - s, n_inputs, generator=g) < density).to(dt).to(device)
    labels = torch.randint(0, 10, (N,), generator=g).to(device)
    return frames, labels, "generated", density


# ----------------------------------------------------------------------------------------------------
# One measurement (runs in a child process)
# ----------------------------------------------------------------------------------------------------

def _settings(cfg: dict):
    from ..admm.settings import ADMMSettings
    over = dict(cfg.get("set", {}))
    over["schedule"] = cfg["schedule"]
    return ADMMSettings.paper(**over) if cfg["preset"] == "paper" else ADMMSettings(**over)


def _timed_blocks(S):
    """Wrap the solver's block functions with timers (synchronising the device around each)."""
    names = ["update_spikes_all_t", "update_potentials_red_black", "update_weights", "_weight_sums",
             "_chunk_current", "reproject", "parallel_output", "sequential_output", "update_dual"]
    totals: dict[str, float] = {}
    originals = {}
    depth = [0]

    def wrap(name, fn):
        def timed(*args, **kw):
            if depth[0]:
                return fn(*args, **kw)
            depth[0] += 1
            dev = args[1].device if len(args) > 1 and hasattr(args[1], "device") else "cpu"
            _sync(dev)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                _sync(dev)
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
                depth[0] -= 1
        return timed

    for n in names:
        if hasattr(S, n):
            originals[n] = getattr(S, n)
            setattr(S, n, wrap(n, originals[n]))
    return totals, originals


def measure(cfg: dict) -> dict:
    """Run one (N, schedule) measurement in this process and return its record."""
    import torch
    from ..admm import solver as S
    from ..network import LIFParams, predict
    from ..resources import estimate_memory
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = cfg["device"]
    rss0 = _rss_now()
    N, T = cfg["N"], cfg["T"]
    n_run = min(N, cfg["subset"]) if cfg.get("subset") else N
    # a subset (sequential schedule, large N) is its own draw of n_run samples of the same kind of data;
    # real recordings come prepared by the parent in a file (reading and framing them has a larger
    # memory peak than the solver at small N, which would hide the solver's peak)
    prepared = cfg.get("data_files", {}).get(str(n_run))
    if prepared:
        blob = torch.load(prepared)
        frames, labels, source, density = blob["frames"].to(device), blob["labels"].to(device), "real", blob["density"]
        del blob
    else:
        frames, labels, source, density = make_data(n_run, T, cfg["frames"], cfg.get("data_dir"),
                                                    cfg.get("cache_dir"), device=device,
                                                    n_inputs=cfg.get("inputs", N_INPUTS),
                                                    density=cfg.get("density", DENSITY))
    settings = _settings(cfg)
    sizes = [frames.shape[2], *cfg["hidden"], 10]
    y = torch.nn.functional.one_hot(labels, 10).to(S.DTYPES[settings.dtype])
    rss_data = _rss_now()
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    gen = torch.Generator().manual_seed(settings.seed)
    cache = S.SolverCache()
    _sync(device)
    t0 = time.perf_counter()
    state = S.init_state(frames, y, sizes, settings, gen, cache)
    S.prepare_input_gram(state, frames, settings, cache)  # part of the start, as in train()
    _sync(device)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    S.iterate(state, frames, y, settings, cache, gen)
    _sync(device)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(cfg["iterations"]):
        t0 = time.perf_counter()
        S.iterate(state, frames, y, settings, cache, gen)
        _sync(device)
        times.append(time.perf_counter() - t0)
    breakdown = None
    if cfg.get("breakdown"):
        totals, originals = _timed_blocks(S)
        try:
            t0 = time.perf_counter()
            S.iterate(state, frames, y, settings, cache, gen)
            _sync(device)
            totals["iteration"] = time.perf_counter() - t0
            totals["other"] = totals["iteration"] - sum(v for k, v in totals.items() if k != "iteration")
        finally:
            for n, fn in originals.items():
                setattr(S, n, fn)
        breakdown = totals
    # the solver's peak, read before the accuracy evaluation below adds its own temporaries
    peak_rss = _peak_rss()
    acc = None
    if cfg.get("accuracy"):
        pred = predict(state.weights, frames, LIFParams(settings.delta, settings.theta), chunk=256)
        acc = float((pred == labels).float().mean())
    if str(device).startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
        peak_kind = "cuda max_memory_allocated"
        data_bytes = base_cuda
        rss0 = 0
    else:
        peak = peak_rss
        peak_kind = "VmHWM"
        data_bytes = rss_data - rss0
    est = estimate_memory(sizes, T, n_run, settings, cfg["frames"], device, density)
    flops = iteration_flops(sizes, T, n_run, settings, density=density)
    sec = min(times) if times else t_first
    scale = N / n_run
    return {"N": N, "N_run": n_run, "T": T, "sizes": sizes, "schedule": settings.schedule, "source": source,
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "paths": dict(cache.paths),
            "density": density, "frames": cfg["frames"], "device": str(device),
            "threads": torch.get_num_threads(), "settings": settings.to_dict(),
            "init_s": t_init, "first_iteration_s": t_first, "iteration_s": times,
            "sec_per_iter": sec * scale, "sec_per_iter_median": sorted(times)[len(times) // 2] * scale if times else None,
            "scaled": scale != 1.0, "flops": flops, "gflops_per_s": flops["total"] / sec / 1e9,
            "peak_bytes": peak, "peak_kind": peak_kind, "rss_start": rss0, "rss_after_data": rss_data,
            "data_bytes": data_bytes, "estimate": est, "breakdown": breakdown, "train_accuracy": acc}


def _child(cfg: dict, timeout: float, module: str = "admm_snn.experiments.bench") -> dict:
    """One measurement in a child process (``python -m module --child JSON``), its record or an error."""
    cmd = [sys.executable, "-m", module, "--child", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", **cfg}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1], **cfg}


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------

def _gib(b) -> str:
    return f"{b / 2 ** 30:.2f}"


def markdown(results: list[dict], peak32: float, peak64: float, header: str) -> str:
    lines = [header, "",
             f"Measured float32 torch.mm rate: {peak32 / 1e9:.1f} GFLOP/s (float64: {peak64 / 1e9:.1f} GFLOP/s).",
             "", "| N | schedule | data | s/iter | ratio seq/par | GFLOP/iter (gram dtype) | GFLOP/s | % fp32 mm "
             "| first iter s | first ÷ median | peak GiB | peak − start GiB | est. GiB | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    par = {r["N"]: r for r in results if r.get("schedule") == "parallel" and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('N')} | {r.get('schedule')} | error: {r['error']} | | | | | | | | | | | |")
            continue
        ratio = ""
        if r["schedule"] == "sequential" and r["N"] in par:
            ratio = f"{r['sec_per_iter'] / par[r['N']]['sec_per_iter']:.2f}"
        scaled = f" (×{r['N'] / r['N_run']:.0f} from N={r['N_run']})" if r["scaled"] else ""
        acc = "" if r.get("train_accuracy") is None else f"{r['train_accuracy']:.3f}"
        med = r.get("sec_per_iter_median")
        first_ratio = f"{r['first_iteration_s'] * r['N'] / r['N_run'] / med:.2f}" if med else ""
        lines.append(
            f"| {r['N']} | {r['schedule']} | {r['source']} {r['frames']} | {r['sec_per_iter']:.3f}{scaled} | {ratio} "
            f"| {r['flops']['total'] / 1e9:.1f} ({r['flops']['total_gram'] / 1e9:.1f}) | {r['gflops_per_s']:.1f} "
            f"| {100 * r['gflops_per_s'] * 1e9 / peak32:.0f}% | {r['first_iteration_s']:.2f} | {first_ratio} "
            f"| {_gib(r['peak_bytes'])} | {_gib(r['peak_bytes'] - r['rss_start'])} | {_gib(r['estimate']['total'])} "
            f"| {acc} |")
    ok = [r for r in results if "error" not in r]
    if ok:
        lines += ["", f"CPU: {ok[0].get('cpu')}; torch CPU capability: {ok[0].get('cpu_capability')}. "
                  "Kernels of the products (solver cache.paths):", ""]
        for r in ok:
            paths = "; ".join(f"{k}: {v}" for k, v in sorted((r.get("paths") or {}).items()))
            lines.append(f"- N={r['N_run']} {r['schedule']}: {paths}")
    bd = [r for r in results if r.get("breakdown")]
    if bd:
        lines += ["", "Time by block (one extra iteration with timers; seconds):", ""]
        keys = sorted({k for r in bd for k in r["breakdown"]})
        lines.append("| N | schedule | " + " | ".join(keys) + " |")
        lines.append("|---|---|" + "---|" * len(keys))
        for r in bd:
            lines.append(f"| {r['N_run']} | {r['schedule']} | "
                         + " | ".join(f"{r['breakdown'].get(k, 0.0):.3f}" for k in keys) + " |")
    lines += ["", "s/iter: best of the timed iterations (the first iteration, which factorises the fixed input "
              "Gram formed at the start, is reported separately). GFLOP/iter: products, Gram sums, Cholesky solves and "
              "factorisations counted from the shapes (element-wise work not counted; the products with the frames "
              "in their sparse form, input_format, count their nonzeros only); in brackets the part "
              "done in the gram dtype. peak: VmHWM (peak resident set) of the child process (whole process, including the "
              "interpreter and the data) or CUDA max_memory_allocated (minus what was allocated before the solver "
              "started); peak − start: that peak minus the resident memory when the measurement began (after "
              "importing torch): what the data and the solver added; est.: resources.estimate_memory. "
              "breakdown: 'other' is the rest of the iteration (the sequential schedule's loop over t, the "
              "dual step, the divergence check)."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for sched, marker in (("parallel", "o"), ("sequential", "s")):
        rows = sorted((r for r in results if r.get("schedule") == sched and "error" not in r), key=lambda r: r["N"])
        if rows:
            ax.plot([r["N"] for r in rows], [r["sec_per_iter"] for r in rows], marker=marker, label=sched)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (samples)")
    ax.set_ylabel("seconds per iteration")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def setting_overrides(items) -> dict:
    """The ``--set NAME=VALUE`` options as a dict (JSON values, else the text); one-line SettingsError for
    an item without ``=``."""
    from ..errors import SettingsError
    overrides = {}
    for item in items:
        if "=" not in item:
            raise SettingsError(f"--set {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    return overrides


def run(args) -> int:
    import torch
    from ..errors import SettingsError
    hidden = list(args.hidden)
    if args.depth is not None:
        if len(hidden) != 1:
            raise SettingsError("--depth needs exactly one --hidden width")
        hidden = hidden * args.depth
    overrides = setting_overrides(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peak32 = matmul_rate(args.device, "float32")
    peak64 = matmul_rate(args.device, "float64")
    print(f"CPU: {cpu_model()}; torch CPU capability: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    print(f"float32 mm: {peak32 / 1e9:.1f} GFLOP/s, float64 mm: {peak64 / 1e9:.1f} GFLOP/s", flush=True)
    data_files = {}
    root = Path(args.data_dir) if args.data_dir else _default_data_dir()
    if args.inputs == N_INPUTS and root is not None and (Path(root) / "Train").is_dir():
        from ..data import FrameSettings, load_nmnist
        count = len(load_nmnist(root, "train", FrameSettings(time_steps=args.time_steps, bin_ms=10.0),
                                cache_dir=args.cache_dir))
        wanted = sorted({n for N in args.n for n in (N, min(N, args.seq_max_n)) if n <= count})
        for n in wanted:
            frames, labels, source, density = make_data(n, args.time_steps, args.frames, root, args.cache_dir)
            if source == "real":
                path = out / f".data-T{args.time_steps}-N{n}-{args.frames}.pt"
                torch.save({"frames": frames, "labels": labels, "density": density}, path)
                data_files[str(n)] = str(path)
            del frames, labels
    results = []
    for N in args.n:
        for sched in args.schedules:
            seq = sched == "sequential"
            cfg = {"N": N, "T": args.time_steps, "hidden": hidden, "schedule": sched, "preset": args.preset,
                   "set": overrides, "iterations": args.seq_iterations if seq else args.iterations,
                   "subset": args.seq_max_n if seq else None, "frames": args.frames, "data_dir": args.data_dir,
                   "cache_dir": args.cache_dir, "device": args.device, "threads": args.threads,
                   "inputs": args.inputs, "density": args.density,
                   "breakdown": not args.no_breakdown, "accuracy": args.accuracy, "data_files": data_files}
            r = _child(cfg, args.timeout)
            results.append(r)
            if "error" in r:
                print(f"N={N} {sched}: error: {r['error']}", flush=True)
            else:
                print(f"N={N} {sched}: {r['sec_per_iter']:.3f} s/iter{' (scaled)' if r['scaled'] else ''}, "
                      f"first iteration {r['first_iteration_s']:.3f} s, "
                      f"{r['gflops_per_s']:.1f} GFLOP/s, peak {_gib(r['peak_bytes'])} GiB "
                      f"(estimate {_gib(r['estimate']['total'])} GiB)", flush=True)
    peak32_after = matmul_rate(args.device, "float32")
    header = (f"# admm-snn bench\n\nCPU: {cpu_model()}; torch CPU capability: "
              f"{torch.backends.cpu.get_cpu_capability()}\n\nT={args.time_steps}, inputs={args.inputs}, hidden={hidden}, preset={args.preset}, overrides={overrides}, "
              f"frames={args.frames}, device={args.device}, threads={torch.get_num_threads()}; "
              f"fp32 mm rate before/after the runs: {peak32 / 1e9:.1f} / {peak32_after / 1e9:.1f} GFLOP/s")
    peak = max(peak32, peak32_after)
    (out / "bench.md").write_text(markdown(results, peak, peak64, header))
    (out / "bench.json").write_text(json.dumps({"fp32_mm_flops": [peak32, peak32_after], "fp64_mm_flops": peak64,
                                                "results": results}, indent=1))
    plot(results, out / "bench.png")
    for path in data_files.values():
        Path(path).unlink(missing_ok=True)
    print((out / "bench.md").read_text())
    return 0


def child_main(argv: list[str]) -> int:
    """``python -m admm_snn.experiments.bench --child JSON``: one measurement, printed as one JSON line."""
    print(json.dumps(measure(json.loads(argv[1]))))
    return 0


if __name__ == "__main__":  # the children of run(); the command itself is 'admm-snn bench' or bench/speed.py
    sys.exit(child_main(sys.argv[1:]))
