"""The launcher of multi-process runs: ``python -m admm_snn.launch`` (under torchrun or with ``--nproc N``).

Turns command-line options into the records the library takes (:class:`ADMMSettings`, the data splits,
a device name) and calls :func:`admm_snn.distributed.train_distributed` (data-parallel),
:func:`admm_snn.distributed_conv.train_distributed_conv` (data-parallel, ``--arch``) or
:func:`admm_snn.federated.train_federated` (``--federated``) in every process. Part of the command-line
layer, with :mod:`admm_snn.cli` and :mod:`admm_snn.options`; ``admm-snn train --nproc N`` starts the
same processes::

    torchrun --nproc-per-node 2 -m admm_snn.launch --dataset nmnist --data-dir ROOT ...
    python -m admm_snn.launch --nproc 2 --dataset nmnist --data-dir ROOT ...   # launch_local
    python -m admm_snn.launch --nproc 4 --federated --non-iid ...              # federated clients

The options are those of ``admm-snn train``; see :func:`admm_snn.options.add_distributed_options`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .distributed import connect, train_distributed
from .errors import AdmmSnnError, SettingsError
from .options import (DEFAULT_HIDDEN, add_arch_options, add_data_options, add_distributed_options,
                      add_training_options, admm_settings, augment_shift, check_conv_options, check_device,
                      conv_inputs, conv_progress, data_options, report_conv, shift_resampler)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m admm_snn.launch",
                                description="Data-parallel (default) or federated ADMM training; run under "
                                            "torchrun or with --nproc N.")
    add_data_options(p)
    add_training_options(p, distributed=True)  # the same options as admm-snn train
    add_arch_options(p)  # --arch: a convolutional network, data-parallel (run_conv_worker)
    add_distributed_options(p)
    return p


def strip_launcher_options(argv: list[str]) -> list[str]:
    """``argv`` without a leading ``train`` sub-command and without ``--nproc N`` / ``--nproc=N``."""
    argv = list(argv)
    if argv and argv[0] == "train":
        argv = argv[1:]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The worker command line for a parsed ``admm-snn train`` (or this module's) namespace, without
    --nproc: what :func:`launch_local` passes to each process. Uses the raw command line in
    ``args.argv`` when the CLI stored it (so --preset sees the same explicitly given options), else
    rebuilds the options whose values differ from the worker parser's defaults."""
    raw = getattr(args, "argv", None)
    if raw is not None:
        return strip_launcher_options(raw)
    argv = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest in ("help", "nproc") or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        long = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
        opt = long[0] if long else action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(opt if value else "--no-" + opt[2:])
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                argv.append(opt)
        elif isinstance(action, argparse._AppendAction):
            for v in value or []:
                argv += [opt, str(v)]
        elif value is not None:
            argv += [opt, repr(value) if isinstance(value, float) else str(value)]
    return argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(nproc: int, argv: list[str], *, grace_s: float = 15.0, env: dict | None = None,
                 program: list[str] | None = None) -> int:
    """Run ``python -m admm_snn.launch ARGV`` in ``nproc`` local processes (no torchrun): sets
    MASTER_ADDR=127.0.0.1, MASTER_PORT (a free port), RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
    and, unless already set, OMP_NUM_THREADS = cores // nproc. Output goes to this process's
    stdout/stderr (``program`` replaces ``[python, -m, admm_snn.launch]``). When a process fails,
    the others get ``grace_s`` seconds to stop on their own (a peer blocked in an all-reduce with the
    failed one reports it at once; a peer that hangs is bounded by its own --timeout), then are
    terminated; if rank 0 had to be terminated, one line says which rank failed first. Returns rank 0's
    exit status if it failed by itself, else the first failing rank's status, else 0."""
    if nproc < 1:
        raise SettingsError(f"--nproc {nproc} must be >= 1")
    base = dict(os.environ if env is None else env)
    base.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc),
                 "LOCAL_WORLD_SIZE": str(nproc)})
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = list(program) if program else [sys.executable, "-m", "admm_snn.launch"]
    procs = [subprocess.Popen([*cmd, *argv], env=dict(base, RANK=str(r), LOCAL_RANK=str(r))) for r in range(nproc)]
    first_fail = None  # (time, rank, status)
    killed = set()
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if first_fail is None:
                bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    first_fail = (time.monotonic(), *bad[0])
            if first_fail is not None and time.monotonic() - first_fail[0] > grace_s:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        killed.add(r)
                        p.terminate()
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                    time.sleep(0.1)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                    p.wait()
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    codes = [p.returncode for p in procs]
    if 0 in killed and first_fail is not None:
        print(f"admm-snn: error: rank {first_fail[1]} of {nproc} exited with status {first_fail[2]}; stopped the "
              f"other processes after {grace_s:g} s", file=sys.stderr, flush=True)
        return first_fail[2]
    if codes[0] != 0:
        return codes[0]
    return next((c for c in codes if c != 0), 0)


def _load_worker_data(args, comm_rank: int):
    from .data.options import load_splits
    opts = data_options(args)
    return load_splits(opts, need_test=comm_rank == 0)


def _worker_device(args) -> str:
    """--device, checked; ``cuda`` means this process's cuda:LOCAL_RANK."""
    device = check_device(args.device)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def run_conv_worker(args) -> int:
    """One process of a data-parallel convolutional run (``--arch``, rank from the environment):
    :func:`distributed_conv.train_distributed_conv` on the dataset's (C, H, W) frames, every rank with all
    the data (each keeps its shard); rank 0 prints and writes what ``admm-snn train --arch`` does in one
    process (without the checkpoint: data-parallel runs do not checkpoint)."""
    import time
    from .distributed_conv import train_distributed_conv
    rank = int(os.environ.get("RANK", 0))
    shift, _ = check_conv_options(args)
    device = _worker_device(args)
    settings = admm_settings(args)
    # every rank loads the data and checks the network before the rendezvous (as run_worker)
    splits = _load_worker_data(args, rank)
    inputs = conv_inputs(args, splits, settings, shift, "cpu", show=rank == 0,
                         processes=int(os.environ.get("WORLD_SIZE", 1)))
    comm = connect(args.backend, args.timeout, device=device)
    try:
        bar, progress = conv_progress(settings, show=comm.is_main and not args.quiet)
        t0 = time.perf_counter()
        try:
            result = train_distributed_conv(inputs.X, splits.train.labels, args.arch, inputs.shape, settings,
                                            n_classes=splits.train.n_classes, val=inputs.val, out=args.out,
                                            comm=comm, device=device, budget_s=args.budget_s,
                                            model_extra=inputs.extra, on_record=progress,
                                            log=print if comm.is_main and not args.quiet else None,
                                            resample=inputs.resample,
                                            spike_solve=getattr(args, "conv_spike_solve", "auto"))
        finally:
            if bar is not None:
                bar.close()
        if comm.is_main:
            report_conv(args, result, time.perf_counter() - t0, inputs, splits, device, settings)
        return 0
    finally:
        comm.close()


def run_worker(args) -> int:
    """One process of a distributed or federated run (rank from the environment); ``--arch``:
    :func:`run_conv_worker`."""
    from .train import accuracy_and_rates
    if getattr(args, "arch", None) is not None:
        return run_conv_worker(args)
    rank = int(os.environ.get("RANK", 0))
    shift = augment_shift(args)
    if args.checkpoint_every or args.resume:
        raise SettingsError("--checkpoint-every and --resume are not supported with --nproc/torchrun runs yet; "
                            "run single-process to checkpoint")
    if getattr(args, "budget_s", None) is not None:
        raise SettingsError("--budget-s is for single-process dense runs (and --arch runs); leave it out with "
                            "--nproc/torchrun or --federated")
    device = _worker_device(args)
    settings = admm_settings(args)
    hidden = args.hidden or [DEFAULT_HIDDEN]
    # Every rank loads the data before the rendezvous (the framing cache is written atomically, so
    # concurrent loads are safe), so the collective timeout never has to cover data loading.
    splits = _load_worker_data(args, rank)
    comm = connect(args.backend, args.timeout, device=device)
    try:
        train_ds = splits.train
        val = (splits.val.time_major(), splits.val.labels) if splits.val is not None else None
        extra = {"data": splits.info["data"], "test_source": splits.info["test_source"]}
        if comm.is_main:
            print(f"data: {splits.info['n_train']} train, {splits.info['n_val']} val, {splits.info['n_test']} test "
                  f"({splits.info['test_source']}); network {[train_ds.n_inputs, *hidden, train_ds.n_classes]}; "
                  f"{comm.world_size} {'clients' if args.federated else 'processes'}", flush=True)
        if args.federated:
            from .federated import (DEFAULT_BLOCK_ROUNDS, DEFAULT_BLOCK_TOL, DEFAULT_CONSENSUS, client_indices,
                                    train_federated)
            scheme = "classes" if args.non_iid else args.partition
            idx = client_indices(train_ds.labels, comm.world_size, comm.rank, scheme, seed=args.split_seed,
                                 alpha=args.dirichlet_alpha, n_classes=train_ds.n_classes)
            local = train_ds.subset(idx)
            extra["partition"] = scheme
            result = train_federated(local.time_major(), local.labels, hidden, settings,
                                     n_classes=train_ds.n_classes, val=val, out=args.out, comm=comm,
                                     consensus=args.consensus if args.consensus is not None else DEFAULT_CONSENSUS,
                                     local_iterations=args.local_iterations, progress=not args.quiet,
                                     block_rounds=(args.block_rounds if args.block_rounds is not None
                                                   else DEFAULT_BLOCK_ROUNDS),
                                     block_tol=args.block_tol if args.block_tol is not None else DEFAULT_BLOCK_TOL,
                                     device=device, model_extra=extra)
        else:
            X = train_ds.time_major()
            # as admm-snn train builds it, over all the data (each rank takes its shard)
            resample = shift_resampler(shift, args, X, train_ds.sensor_shape, settings.seed)
            result = train_distributed(X, train_ds.labels, hidden, settings,
                                       n_classes=train_ds.n_classes, val=val, out=args.out, comm=comm,
                                       progress=not args.quiet, device=device, model_extra=extra,
                                       report_samples=args.report_samples, val_samples=args.val_samples,
                                       resample=resample)
        if comm.is_main:
            last = result.history[-1] if result.history else {}
            summary = {"best_iteration": result.best_iteration, "wall_s": round(result.wall_s, 2),
                       "train_accuracy": last.get("train_accuracy"), "val_accuracy": None,
                       "world_size": comm.world_size, "mode": "federated" if args.federated else "data-parallel",
                       "bytes": dict(comm.bytes)}
            if val is not None:
                summary["val_accuracy"] = next((h["val_accuracy"] for h in result.history
                                                if h["iteration"] == result.best_iteration), None)
            if splits.test is not None:
                acc, rates = accuracy_and_rates([w.to(device) for w in result.weights],
                                                splits.test.time_major(device=device),
                                                splits.test.labels.to(device), settings.lif)
                summary["test_accuracy"], summary["test_firing_rate"] = acc, rates
                path = Path(args.out) / "summary.json"
                full = json.loads(path.read_text())
                full.update({"test_accuracy": acc, "test_firing_rate": rates, "split": splits.info})
                path.write_text(json.dumps(full, indent=2))
            print(json.dumps(summary), flush=True)
            if "test_accuracy" in summary:
                print(f"test accuracy: {summary['test_accuracy']:.4f}", flush=True)
        return 0
    finally:
        comm.close()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.nproc > 1 and "RANK" not in os.environ:
        try:
            return launch_local(args.nproc, worker_argv(args))
        except AdmmSnnError as exc:
            print(f"admm-snn: error: {exc}", file=sys.stderr)
            return 2
    rank = os.environ.get("RANK", "0")
    try:
        return run_worker(args)
    except AdmmSnnError as exc:
        msg = str(exc) if str(exc).startswith("rank ") else f"rank {rank}: {exc}"
        print(f"admm-snn: error: {msg}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"admm-snn: rank {rank} interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
