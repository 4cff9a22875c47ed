"""Data-parallel ADMM for convolutional networks: :func:`train_distributed_conv`, the
:func:`conv_train.fit_conv` run on all the data computed by ``world_size`` processes (``torch.distributed``),
each holding a contiguous shard of the samples and their states.

What is reduced (summed over processes by ``cache.reduce``, an all-reduce; everything else is per sample):

- the weight blocks' sums: a conv layer's patch Gram G = Σ PᵀP and cross sums C = Σ X P
  (conv_solver.update_weights; the first conv layer's G, cached as ``INPUT_PATCH_GRAM``, is the reduced
  one, formed again from every shard's new draw under shift augmentation), a dense layer's Σ p pᵀ and
  Σ x pᵀ, and the output block's leaky-sum Grams (solver.parallel_output);
- the rate calibration of the start: every process calibrates on its part of the one-process
  subsample (``conv_solver.calibration_samples(N)``, evenly spaced over all N samples) and the spike and
  unit counts of each bisection step are summed (conv_solver.init_state with ``shard``). No frames move;
  the counts are integers, exact in float64, so every process takes the one-process scale (a float32
  count of 0/1 spikes is exact below 2^24, far above the count near the target: 4.4 M of 55 M decisions
  for 8c5 on 256 N-MNIST recordings, T = 30, at the default rate 0.08; a bisection step at a rate far
  above the target compares it with the target, which a rounding of the count cannot change);
- the CG spike blocks' stopping rule (layers that feed a convolution): every process iterates until the
  number of rows above the tolerance, summed over processes, is 0 (conv.solve_spikes_cg ``reduce``), so
  each row runs the iterations it runs in one process;
- the report: correct predictions, spike sums and counts (float64 sums: accuracies are exact counts over
  all samples), the CG iterations and residuals (max); the slowest process's seconds per step.

Per process: the potentials, spikes, dual and their blocks (spikes, potentials, output potentials, dual,
re-projection), the augmentation draw of its shard (``ShiftResampler.shard``: the offsets its samples get
in one process). The seeded generator draws the same weights on every rank; ``init="uniform"`` draws the
full per-sample states in the one-process order and keeps the shard's slice.

How close to one process: every per-sample operation (conv2d, its transpose, the LIF recurrence, the
row-wise products and solves) gives a sample the same bits in any batch on the CPUs measured (the tests
check it before they assert equality), so the only differences are the order of the reduced sums, which
are float64 (the gram dtype). With float64 cross products (``cross_dtype="float64"``: a conv layer's C
from float64 products, conv_solver.weight_sums) they differ by float64 rounding only, which the float32
weights absorb: the 2-process weights and history are the 1-process ones bit for bit (tests; 8c5-p4-64 on
400 N-MNIST recordings, T = 10, 5 iterations, shift augmentation: bit for bit). With float64 states
(``dtype="float64"``) the weights keep that rounding: about 1e-10 relative after 4 iterations of the
tests' problem, the same accuracies. With the default float32 products a conv layer's C is conv2d's
kernel gradient in float32 over each process's images, rounded differently than over all of them; the
relative weight step (length η‖W‖ along W* − W_prev, a small difference in the first iterations) turns
that into another direction and threshold flips amplify it: on that N-MNIST run the weights end 24 / 5 /
23 % apart (conv / dense / output), the training accuracy within 4 of 400 samples, as far as one process
on 1 and on 2 threads (25 / 7 / 29 %, 4 samples; bench/conv_parallel.py, docs/distributed.md).

Budget and stop: the seconds of every step (start, iteration) are the slowest process's (one control
all-reduce, :func:`distributed.step_together`, which also stops every process when one fails), so the
compute total, the ``budget_s`` decision and the best iteration are the same on every rank. Only rank 0
writes ``out`` (metrics.jsonl, model.safetensors, summary.json, as :func:`conv_train.train_conv`);
data-parallel runs do not checkpoint or resume (as dense ones, :func:`distributed.train_distributed`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .admm import conv_solver as CS
from .admm import solver as S
from .admm.settings import ADMMSettings
from .admm.state import ADMMState
from .conv_network import flat_frames
from .conv_train import ConvFitResult, check_arguments, write_run
from .distributed import (DEFAULT_TIMEOUT_S, Comm, _local_resampler, _shard, connect, fault_hook,
                          step_together)
from .errors import SettingsError


def uniform_state_shard(problem: CS.ConvProblem, settings: ADMMSettings, generator: torch.Generator, T: int,
                        start: int, n_local: int, n_total: int, device) -> ADMMState:
    """The ``init="uniform"`` start (W = 0, z and a uniform in [0, 1), λ = 0) of samples start.. of
    n_total: every layer's potentials, then every hidden layer's spikes drawn as (T, n_total, n) float64
    tensors in :func:`state.uniform_state`'s order (the generator consumed as in one process), this
    shard's slice kept."""
    dtype = S.DTYPES[settings.dtype]
    sizes = problem.sizes

    def draw(n):
        full = torch.rand(T, n_total, n, generator=generator, dtype=torch.float64)
        return full[:, start:start + n_local].to(dtype=dtype, device=device).contiguous()

    weights = [torch.zeros(L.weight_shape, dtype=dtype, device=device) for L in problem.net]
    pots = [draw(n) for n in sizes[1:]]
    spikes = [draw(n) for n in sizes[1:-1]]
    return ADMMState(weights, pots, spikes, torch.zeros(n_local, sizes[-1], dtype=dtype, device=device), 0)


def report_sums(state: ADMMState, X, lab, val, problem: CS.ConvProblem, settings: ADMMSettings) -> torch.Tensor:
    """This shard's part of the report, float64: [correct, samples] of the training frames ``X`` (the
    current draw), [Σ a_l, count] of every hidden layer's spikes, then [correct, samples] of ``val``
    (when given). Summed over processes, the report is these ratios."""
    def counts(frames, labels):
        if frames.shape[1] == 0:
            return [0.0, 0.0]
        pred = CS.predict(state.weights, frames, problem, settings)
        return [float((pred == labels.to(torch.long)).sum()), float(labels.numel())]
    parts = counts(X, lab)
    for a in state.spikes:
        parts += [float(a.sum(dtype=torch.float64)), float(a.numel())]
    if val is not None:
        parts += counts(*val)
    return torch.tensor(parts, dtype=torch.float64)


def cg_vector(cg_log: dict) -> tuple[list, torch.Tensor]:
    """The CG log {layer: [(iterations, residual), ...]} as (its layout, a float64 vector) for a max
    all-reduce; :func:`cg_from_vector` inverts it."""
    layout = [(l, len(v)) for l, v in sorted(cg_log.items())]
    flat = [float(x) for l, _ in layout for pair in cg_log[l] for x in pair]
    return layout, torch.tensor(flat, dtype=torch.float64)


def cg_from_vector(layout: list, v: torch.Tensor) -> dict:
    vals, out, i = v.tolist(), {}, 0
    for l, n in layout:
        out[l] = [[int(vals[i + 2 * j]), vals[i + 2 * j + 1]] for j in range(n)]
        i += 2 * n
    return out


def global_record(state, X, lab, val, problem, settings, comm: Comm, it: int, seconds: float,
                  compute: float) -> dict:
    """The history entry of :func:`conv_train.fit_conv` over every process's samples: one float64 sum
    all-reduce of :func:`report_sums` and one max all-reduce of the CG log (iterations are the same on
    every process; the residual is the largest of any process's rows)."""
    total = comm.all_reduce(report_sums(state, X, lab, val, problem, settings), "sum", "metrics").tolist()
    layout, cg = cg_vector(problem.cg_log)
    cg = cg_from_vector(layout, comm.all_reduce(cg, "max", "metrics") if cg.numel() else cg)
    n_hidden = len(state.spikes)
    m = {"iteration": it, "train_accuracy": total[0] / total[1],
         "firing_rate": [total[2 + 2 * l] / total[3 + 2 * l] for l in range(n_hidden)],
         "seconds": seconds, "wall_s": compute, "cg": cg}
    if val is not None:
        m["val_accuracy"] = total[2 + 2 * n_hidden] / total[3 + 2 * n_hidden]
    return m


def train_distributed_conv(frames: torch.Tensor, labels: torch.Tensor, arch, input_shape,
                           settings: ADMMSettings | None = None, iterations: int | None = None, *,
                           n_classes: int | None = None, val: tuple | None = None, out: str | Path | None = None,
                           comm: Comm | None = None, sharded: bool = False, backend: str | None = None,
                           timeout_s: float = DEFAULT_TIMEOUT_S, rank: int | None = None,
                           world_size: int | None = None, init_method: str | None = None, device: str = "cpu",
                           budget_s: float | None = None, cg_tol: float = 1e-4, cg_max_iterations: int = 100,
                           spike_solve: str = "auto",
                           on_record=None, log=None, model_extra: dict | None = None,
                           resample=None) -> ConvFitResult:
    """:func:`conv_train.fit_conv` on all the data, computed by the processes of a ``torch.distributed``
    group, each holding a contiguous shard of the samples and their states (module docstring: what is
    reduced, and how close the result is to one process's).

    Every process calls this with the same arguments. ``frames`` (T, N, C·H·W) or (T, N, C, H, W) and
    ``labels`` (N,) are all the training data (each rank keeps ``distributed.shard_bounds(N, world_size,
    rank)``), or, with ``sharded=True``, this rank's shard (the shards of ranks 0, 1, ... concatenated are
    the data set). ``val`` = (frames, labels) is split the same way, and its accuracy is the count over
    every shard. The process group: ``comm``, else the initialised default group, else one created here
    from ``rank``/``world_size``/``init_method`` or the torchrun environment with ``backend`` and
    ``timeout_s`` (destroyed at the end). ``settings``, ``iterations``, ``n_classes``, ``budget_s``,
    ``cg_tol``, ``cg_max_iterations``, ``spike_solve`` and ``resample`` (shift augmentation over all the data; each rank
    redraws its shard: ``ShiftResampler.shard``) as in :func:`conv_train.fit_conv`; ``budget_s`` counts the
    slowest process's seconds, so every process stops after the same iteration.

    Returns a :class:`conv_train.ConvFitResult`, the same on every rank apart from ``state`` (this rank's
    shard); its history entries are fit_conv's (``seconds``: the slowest process's) plus ``world_size``
    and ``allreduce_bytes`` (the solver's all-reduces that step). ``on_record`` is called on every rank
    with every entry. With ``out``, rank 0 writes what :func:`conv_train.train_conv` writes
    (metrics.jsonl as it goes, model.safetensors with the best-validation weights, summary.json) with a
    ``distributed`` record (world size, shard sizes, bytes) added; no checkpoint (data-parallel runs do not
    checkpoint or resume). ``log`` (rank 0) prints the memory estimate of this machine's processes.
    Bad arguments are one-line :class:`SettingsError`s on every rank."""
    from .io import atomic_write_text
    from .resources import check_conv_memory
    from .train import _append_metrics, _draw, _prepare_out

    labels = torch.as_tensor(labels)
    settings, iterations = check_arguments(settings, iterations, budget_s, frames, labels, sharded)
    if out is not None and not isinstance(arch, str):
        raise SettingsError(f"arch must be an architecture string such as '12c5-p2-128' to write a run, not "
                            f"{type(arch).__name__}")
    created = comm is None
    if comm is None:
        comm = connect(backend, timeout_s, rank=rank, world_size=world_size, init_method=init_method, device=device)
    try:
        Xf, lab, start, n_total, counts = _shard(flat_frames(frames, input_shape), labels, comm, sharded)
        if min(counts) < 1:
            raise SettingsError(f"{n_total} training samples cannot be split over {comm.world_size} processes; "
                                "use fewer processes or more data")
        ends = comm.all_reduce(torch.tensor([float(lab.max()), -float(lab.min())], dtype=torch.float64), "max",
                               "control").tolist()
        if ends[1] > 0:
            raise SettingsError("labels must be class indices >= 0")
        n_classes = int(n_classes or int(ends[0]) + 1)
        if int(ends[0]) >= n_classes:
            raise SettingsError(f"label {int(ends[0])} is outside 0..{n_classes - 1} (n_classes={n_classes})")
        problem = CS.conv_problem(arch, input_shape, n_classes, cg_tol, cg_max_iterations, spike_solve)
        CS.check_settings(problem, settings)
        dtype = S.DTYPES[settings.dtype]
        compact = Xf.dtype in (torch.uint8, torch.bool)
        X = CS.flat(Xf, problem).to(device=device)
        X = X if compact else X.to(dtype)
        local = _local_resampler(resample, sharded, settings, start, X.shape[1])
        if local is not None:
            X = X.clone()  # replaced in place at every redraw; the caller's frames stay as they are
        lab = lab.to(device=device, dtype=torch.long)
        y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
        if val is not None:
            vf, vl, *_ = _shard(CS.flat(val[0], problem), torch.as_tensor(val[1]), comm, sharded)
            if vl.shape != (vf.shape[1],):
                raise SettingsError(f"validation labels have shape {tuple(vl.shape)}; expected ({vf.shape[1]},)")
            val = (vf.to(device), vl.to(device))
        generator = torch.Generator().manual_seed(settings.seed)
        cache = S.SolverCache()
        cache.reduce = lambda t: comm.all_reduce(t, "sum", "weights")
        out = Path(out) if out is not None else None
        # processes of this machine share its memory (on CUDA each has its own device)
        local_procs = 1 if str(device).startswith("cuda") else int(os.environ.get("LOCAL_WORLD_SIZE", comm.world_size))
        state = None

        def prepare() -> None:  # the memory check and rank 0's folder, agreed by every process
            check_conv_memory(problem, int(X.shape[0]), int(X.shape[1]) * local_procs, settings, str(device),
                              log if comm.is_main else None, X.dtype if compact else None)
            if out is not None and comm.is_main:
                _prepare_out(out)
                atomic_write_text(out / "metrics.jsonl", "")

        def begin() -> None:  # the start (timed, as fit_conv's)
            nonlocal state
            if settings.init == "uniform":
                state = uniform_state_shard(problem, settings, generator, int(X.shape[0]), start, int(X.shape[1]),
                                            n_total, X.device)
            else:
                state = CS.init_state(X, y, problem, settings, generator, cache, shard=(start, n_total))

        def redraw() -> None:  # this shard of the iteration's draw, in place, before its re-projection
            X.copy_(_draw(local, state.iteration + 1, X))
            S.forget_inputs(cache)

        history, best, best_score, best_it = [], None, -1.0, 0

        def record(it: int, seconds: float, compute: float, moved: int) -> None:
            nonlocal best, best_score, best_it
            m = global_record(state, X, lab, val, problem, settings, comm, it, seconds, compute)
            m["world_size"], m["allreduce_bytes"] = comm.world_size, moved
            score = m.get("val_accuracy", m["train_accuracy"])
            if val is None or score > best_score:
                best, best_score, best_it = [w.clone() for w in state.weights], score, it
            history.append(m)
            if out is not None and comm.is_main:
                _append_metrics(out, m, "free disk space or choose another --out")
            if on_record is not None:
                on_record(m)

        comm.where = "the start"
        step_together(comm, prepare, lambda: "another process stopped with an error before the start")
        t_wall = time.perf_counter()
        b0 = comm.bytes["weights"]
        compute = step_together(comm, begin, lambda: "another process stopped with an error at the start")
        record(0, compute, compute, comm.bytes["weights"] - b0)
        it = 0
        while it < iterations and not (budget_s is not None and compute >= budget_s):
            fault_hook(comm.rank, it)
            it += 1
            comm.where = f"iteration {it}"
            b0 = comm.bytes["weights"]
            step = step_together(
                comm, lambda: CS.iterate(state, X, y, problem, settings, cache, generator,
                                         redraw=redraw if local is not None else None),
                lambda: f"another process stopped with an error at iteration {it}")
            compute += step
            moved = comm.bytes["weights"] - b0
            comm.records.append({"iteration": it, "seconds": step, "bytes": moved})
            record(it, step, compute, moved)
        wall = time.perf_counter() - t_wall
        status = "budget" if it < iterations else "finished"
        result = ConvFitResult([w.detach().clone() for w in state.weights], best, history, state, problem,
                               best_iteration=best_it, iterations=it, status=status, compute_s=compute, wall_s=wall)
        if out is not None and comm.is_main:
            write_run(out, result, arch, settings,
                      {"distributed": {"mode": "data-parallel", "world_size": comm.world_size, "shard_sizes": counts,
                                       "bytes": dict(comm.bytes)}, **(model_extra or {})})
        return result
    finally:
        if created:
            comm.close()
