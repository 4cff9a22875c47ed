"""Scaling of data-parallel ADMM (admm_snn.distributed) on one machine, Gloo on CPU.

Measures seconds per iteration with 1 and 2 (or --procs ...) processes for a fixed total number of
recordings (strong scaling) and for a fixed number per process (weak scaling), and the bytes each
process all-reduces per iteration; adds a federated run (admm_snn.federated, weights only) for the
bytes. Writes scaling.md (tables), scaling.json (raw records) and scaling.png into --out.

    python bench/scaling.py --data-dir /work/shared/data/nmnist --out runs/scaling \\
        --n 400 --hidden 128 --time-steps 30 --iterations 3

Each configuration runs in fresh processes started by admm_snn.launch.launch_local (threads per
process: --threads-per-proc, default 1). Iteration 1 also
all-reduces and factorises the fixed input Gram matrix (2312² float64), so it is reported apart from
the steady iterations 2..K. Metrics (forward simulations) run only after the last iteration and are
not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _worker(args) -> int:
    import torch

    from admm_snn.admm.settings import ADMMSettings
    from admm_snn.data import FrameSettings, load_nmnist
    from admm_snn.distributed import connect, train_distributed
    from admm_snn.errors import AdmmSnnError

    ds = load_nmnist(args.data_dir, "train", FrameSettings(args.time_steps, 10.0, 10.0), cache_dir=args.cache_dir,
                     limit=args.n)
    settings = ADMMSettings(iterations=args.iterations, seed=0)
    comm = connect(None, args.timeout)
    try:
        t0 = time.perf_counter()
        if args.mode == "federated":
            from admm_snn.federated import client_indices, train_federated
            local = ds.subset(client_indices(ds.labels, comm.world_size, comm.rank, "iid", seed=0))
            res = train_federated(local.time_major(), local.labels, [args.hidden], settings, n_classes=10, comm=comm,
                                  metrics_every=args.iterations)
        else:
            res = train_distributed(ds.time_major(), ds.labels, [args.hidden], settings, n_classes=10, comm=comm,
                                    metrics_every=args.iterations)
        total = time.perf_counter() - t0
        if comm.is_main:
            rec = {"mode": args.mode, "procs": comm.world_size, "n": len(ds), "n_per_proc": len(ds) / comm.world_size,
                   "threads_per_proc": torch.get_num_threads(), "iterations": comm.records, "bytes": comm.bytes,
                   "run_s": total, "train_accuracy": res.history[-1]["train_accuracy"]}
            Path(args.result).write_text(json.dumps(rec))
    except AdmmSnnError as exc:
        print(f"scaling: error: {exc}", file=sys.stderr)
        return 2
    finally:
        comm.close()
    return 0


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.2f} {unit}"
        b /= 1000.0
    return str(b)


def _summarise(rec: dict) -> dict:
    its = rec["iterations"]
    steady = its[1:] or its
    return {"first_s": its[0]["seconds"], "steady_s": sum(r["seconds"] for r in steady) / len(steady),
            "first_bytes": its[0]["bytes"], "steady_bytes": sum(r["bytes"] for r in steady) / len(steady),
            "steady_allreduce_s": sum(r.get("allreduce_s", 0.0) for r in steady) / len(steady)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist"))
    p.add_argument("--cache-dir", default=None, help="framing cache (default: <out>/cache)")
    p.add_argument("--out", help="output folder for scaling.md, scaling.json, scaling.png")
    p.add_argument("--n", type=int, default=400, help="total recordings for strong scaling (default 400)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--time-steps", type=int, default=30)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=1,
                   help="run each configuration R times and report the median (noisy shared machines)")
    p.add_argument("--no-federated", action="store_true", help="skip the federated bytes run")
    p.add_argument("--threads-per-proc", type=int, default=1,
                   help="torch threads per process (default 1; 0 = cores // processes). On a busy shared "
                        "machine several OpenMP threads per process can be many times slower than one")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="data-parallel", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    if not args.out:
        p.error("--out DIR is required")

    from admm_snn.data import FrameSettings, load_nmnist
    from admm_snn.launch import launch_local

    out = Path(args.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or str(out / "cache")
    base = max(1, args.n // max(args.procs))  # recordings per process in the weak-scaling runs
    # frame every size once here, so the workers only read the cache
    for n in sorted({args.n, *[base * P for P in args.procs]}):
        load_nmnist(args.data_dir, "train", FrameSettings(args.time_steps, 10.0, 10.0), cache_dir=cache, limit=n)
    runs = {}

    def run_once(mode, P, n, k):
        res = out / "raw" / f"{mode}-p{P}-n{n}-r{k}.json"
        wargs = ["--worker", "--mode", mode, "--result", str(res), "--data-dir", args.data_dir, "--cache-dir", cache,
                 "--n", str(n), "--hidden", str(args.hidden), "--time-steps", str(args.time_steps),
                 "--iterations", str(args.iterations), "--timeout", str(args.timeout)]
        print(f"running {mode}: {P} process(es), {n} recordings (repeat {k + 1}/{args.repeat}) ...", flush=True)
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(args.threads_per_proc or max(1, (os.cpu_count() or 1) // P))
        rc = launch_local(P, wargs, program=[sys.executable, str(Path(__file__).resolve())], env=env)
        if rc != 0:
            raise SystemExit(f"scaling: the {mode} run with {P} processes failed (status {rc})")
        rec = json.loads(res.read_text())
        rec.update(_summarise(rec))
        return rec

    def run(mode, P, n):
        key = (mode, P, n)
        if key not in runs:
            reps = [run_once(mode, P, n, k) for k in range(args.repeat)]
            rec = dict(sorted(reps, key=lambda r: r["steady_s"])[len(reps) // 2])  # the median repeat
            rec["steady_s_all"] = [r["steady_s"] for r in reps]
            rec["first_s_all"] = [r["first_s"] for r in reps]
            runs[key] = rec
        return runs[key]

    load0 = os.getloadavg()
    strong = [run("data-parallel", P, args.n) for P in args.procs]
    weak = [run("data-parallel", P, base * P) for P in args.procs]
    fed = None if args.no_federated else run("federated", max(args.procs), args.n)
    load1 = os.getloadavg()

    import torch
    lines = [f"# Data-parallel ADMM scaling (Gloo, CPU)", "",
             f"N-MNIST recordings from `{args.data_dir}`, network [2312, {args.hidden}, 10], T = {args.time_steps}, "
             f"{args.iterations} iterations, default ADMMSettings (seed 0). Machine: {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), torch {torch.__version__}; load average "
             f"{load0[0]:.1f} before, {load1[0]:.1f} after (shared machine). Threads per process: "
             f"{args.threads_per_proc or 'cores // processes'} (column below). 'first' = iteration 1 (also "
             f"all-reduces and factorises the input Gram 2312² float64); "
             f"'steady' = mean of iterations 2..{args.iterations}; 'in all-reduce' = rank 0's time inside the "
             f"weight all-reduces (transfer plus waiting for the slower rank). Seconds are the slowest process's; with "
             f"--repeat {args.repeat}, the run with the median steady time (all repeats in brackets).", ""]

    def table(title, rows, ref, weak_mode):
        lines.extend([f"## {title}", "",
                      "| processes | N total | N / process | threads / process | first iter (s) | steady s/iter | "
                      f"{'efficiency' if weak_mode else 'speed-up'} | in all-reduce, s/iter | all-reduce bytes, iter 1 | "
                      "all-reduce bytes / iter (steady) |",
                      "|---|---|---|---|---|---|---|---|---|---|"])
        for r in rows:
            rel = ref["steady_s"] / r["steady_s"]
            lines.append(f"| {r['procs']} | {r['n']} | {r['n_per_proc']:.0f} | {r['threads_per_proc']} | "
                         f"{r['first_s']:.2f} | {r['steady_s']:.2f} [{', '.join(f'{x:.2f}' for x in r['steady_s_all'])}] | "
                         f"{rel:.2f} | {r['steady_allreduce_s']:.3f} | {_fmt_bytes(r['first_bytes'])} | "
                         f"{_fmt_bytes(r['steady_bytes'])} |")
        lines.append("")

    table(f"Strong scaling (N = {args.n} in total)", strong, strong[0], False)
    table(f"Weak scaling (N = {base} per process)", weak, weak[0], True)
    if fed is not None:
        lines.extend([f"## Federated ({fed['procs']} clients, N = {fed['n']} in total, iid)", "",
                      f"steady s/round {fed['steady_s']:.2f} (first {fed['first_s']:.2f}); bytes all-reduced per "
                      f"round: {_fmt_bytes(fed['steady_bytes'])} (the weights and their averaging weights only; "
                      f"data-parallel: {_fmt_bytes(strong[-1]['steady_bytes'])} per iteration and "
                      f"{_fmt_bytes(strong[-1]['first_bytes'])} in iteration 1).", ""])
    lines.extend(["Bytes are the payload of each process's all-reduce calls (numel × element size); a ring "
                  "all-reduce sends about 2(P−1)/P times that per process.", ""])
    (out / "scaling.md").write_text("\n".join(lines))
    (out / "scaling.json").write_text(json.dumps({"strong": strong, "weak": weak, "federated": fed,
                                                  "load_average": [load0, load1]}, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for rows, label in ((strong, f"strong (N={args.n})"), (weak, f"weak (N={base}/proc)")):
        ax[0].plot([r["procs"] for r in rows], [r["steady_s"] for r in rows], "o-", label=label)
    ax[0].set_xlabel("processes")
    ax[0].set_ylabel("seconds / iteration (steady)")
    ax[0].set_xticks(args.procs)
    ax[0].set_ylim(bottom=0)
    ax[0].legend()
    ax[0].set_title("time per iteration")
    names = [f"DP P={r['procs']}\niter 1" for r in strong if r["procs"] > 1] + \
            [f"DP P={r['procs']}\nsteady" for r in strong if r["procs"] > 1]
    vals = [r["first_bytes"] for r in strong if r["procs"] > 1] + [r["steady_bytes"] for r in strong if r["procs"] > 1]
    if fed is not None:
        names.append(f"federated K={fed['procs']}\nper round")
        vals.append(fed["steady_bytes"])
    bars = ax[1].bar(range(len(vals)), [v / 1e6 for v in vals])
    ax[1].bar_label(bars, [_fmt_bytes(v) for v in vals], fontsize=8)
    ax[1].set_xticks(range(len(vals)), names, fontsize=8)
    ax[1].set_yscale("log")
    ax[1].set_ylim(bottom=min([v / 1e6 for v in vals] or [1.0]) / 10)
    ax[1].set_ylabel("MB all-reduced per process")
    ax[1].set_title("communication per iteration")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)
    print("\n".join(lines))
    print(f"wrote {out / 'scaling.md'}, {out / 'scaling.json'}, {out / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
