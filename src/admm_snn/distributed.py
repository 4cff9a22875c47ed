"""Data-parallel ADMM over ``torch.distributed`` (Gloo on CPU, NCCL on GPU), and a local launcher.

Why it is exact (spec §4): given the per-sample states, the weight update of every layer needs only the
sums G = Σ a aᵀ and C = Σ x aᵀ over samples. Each process holds a contiguous shard of the samples and
their states (potentials, spikes, dual); the solver calls ``cache.reduce`` on its G and C, which here is
an all-reduce, so every process solves the same system and gets the same weights as one process on all
the data, up to the order of the floating-point sums. Every other block (spikes, potentials, output
potentials, dual) is per sample and needs no communication. How far the order of the sums matters: with
the cross sums' products in float64 (``cross_dtype="float64"``) only in float64 rounding, which the float32
weights absorb (2 processes gave the 1-process weights bit for bit in every measurement, with one thread
per process); with the default float32 products the shards' rounding differs at float32 level and the
re-projection's threshold flips amplify it to a few percent of the weights after 5 iterations, the
training accuracy staying within a few samples — as between one process on 1 and on 2 threads
(docs/performance-and-determinism.md, tests/test_distributed.py).

Starting point. ``init="forward"`` (the default) draws the weights from the seeded generator (the same
draws on every rank) and takes the states from the forward simulation of each sample, so the shards
are exactly the single-process states. ``init="uniform"`` draws per-sample uniform states: every rank
draws the full (T, N, n) tensor of each layer in the single-process order, keeps its slice and frees the
rest (peak extra memory: one layer of the full state in float64, on every rank).

Metrics (Lagrangian, loss, residuals, spike gap, accuracies, firing rates) are formed from sums over
samples (admm_snn.metrics): each shard's sums and counts are added with one all-reduce and turned into
the report by the single-process formulas, so accuracies, rates and spike gaps are exact counts over all
samples. Only rank 0 writes files.

Failure handling: ``init_process_group`` gets a ``timeout``; a process that dies or hangs makes the
others stop within it with one line (:class:`DistributedError`), and a Python error on one rank (e.g.
divergence) is announced to the others through a per-iteration control all-reduce.

This module takes settings records and tensors (:func:`train_distributed`); the command line that turns
options into them and starts the processes is :mod:`admm_snn.launch`::

    torchrun --nproc-per-node 2 -m admm_snn.launch --dataset nmnist --data-dir ROOT ...
    admm-snn train --nproc 2 --dataset nmnist --data-dir ROOT ...     # local processes, no torchrun
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import timedelta
from pathlib import Path

import torch

from .admm import solver as S
from .admm.sparse_inputs import frame_density, remember_density
from .admm.settings import ADMMSettings
from .admm.state import ADMMState
from .alignment import aligned
from .errors import AdmmSnnError, SettingsError

DEFAULT_TIMEOUT_S = 300.0
FAULT_ENV = "ADMM_SNN_TEST_FAULT"
"""Test-only fault injection: ``die:RANK:ITER`` (os._exit(1)) or ``hang:RANK:ITER`` (sleep for an hour)
when rank RANK is about to start iteration ITER (0-based)."""


class DistributedError(AdmmSnnError):
    """A process of a distributed run died, hung, or could not be reached."""


# ----------------------------------------------------------------------------------------------------
# Communication
# ----------------------------------------------------------------------------------------------------

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


class Comm:
    """The process group of one run, with byte counters.

    ``all_reduce(t, op, kind)`` returns the reduced copy of ``t`` (``t`` is left unchanged) and adds its
    payload size (numel × element size) to ``bytes[kind]``; ``kind`` is "weights" (the solver's Gram
    and cross sums, or the federated consensus average), "metrics" or "control". A collective that fails
    (a peer died, hung past the timeout, or the connection broke) raises a one-line
    :class:`DistributedError`. With ``world_size == 1`` nothing is communicated and nothing counted.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, group=None, timeout_s: float | None = None,
                 device: str = "cpu", owns_group: bool = False):
        self.rank, self.world_size, self.group = int(rank), int(world_size), group
        self.timeout_s, self.device, self.owns_group = timeout_s, device, owns_group
        self.bytes = {"weights": 0, "metrics": 0, "control": 0}
        self.seconds = {"weights": 0.0, "metrics": 0.0, "control": 0.0}
        """Wall time spent in all-reduce calls (transfer plus waiting for the slowest process; on CUDA
        only the launch, NCCL being asynchronous)."""
        self.records: list[dict] = []
        """One entry per training iteration (or federated round), metrics or not: ``seconds`` (slowest
        rank), ``bytes`` (payload of the weight all-reduces) and ``allreduce_s`` (this rank's time in
        them)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    where: str = ""
    """What the run is doing (e.g. "iteration 3"), named in error messages."""

    def _fail(self, what: str, exc: BaseException):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = re.sub(r"^\[[^\]]*\]\s*", "", first)[:140]  # drop Gloo's "[/path/file.cc:123]" prefix
        timed_out = "timed out" in first.lower() or "timeout" in first.lower()
        cause = (f"no answer within the {self.timeout_s:g} s timeout (a process hung or is too slow)" if timed_out
                 else "the connection to another process broke (it died)")
        at = f" at {self.where}" if self.where else ""
        return DistributedError(f"rank {self.rank} of {self.world_size}: {what}{at} failed: {cause}; "
                                f"see the other ranks' messages ({first})")

    def all_reduce(self, t: torch.Tensor, op: str = "sum", kind: str = "weights") -> torch.Tensor:
        if self.world_size == 1:
            return t
        import torch.distributed as dist
        buf = t.detach().to(self.device).clone().contiguous()
        t0 = time.perf_counter()
        try:
            dist.all_reduce(buf, op=getattr(dist.ReduceOp, _OPS[op]), group=self.group)
        except RuntimeError as exc:  # DistBackendError, DistNetworkError, Gloo/NCCL errors
            raise self._fail("all-reduce", exc) from None
        self.seconds[kind] += time.perf_counter() - t0
        self.bytes[kind] += buf.numel() * buf.element_size()
        return buf.to(t.device)

    def barrier(self) -> None:
        if self.world_size == 1:
            return
        self.all_reduce(torch.zeros(1), kind="control")

    def close(self) -> None:
        """Destroy the process group if this Comm created it."""
        if self.owns_group and self.world_size > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                try:
                    dist.destroy_process_group()
                except Exception:  # noqa: BLE001 - a broken group cannot be cleaned up further
                    pass
        self.owns_group = False


def connect(backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, *, rank: int | None = None,
            world_size: int | None = None, init_method: str | None = None, device: str = "cpu") -> Comm:
    """Join (or reuse) the default process group and return its :class:`Comm`.

    Without an initialised group, ``rank`` and ``world_size`` default to $RANK and $WORLD_SIZE (set by
    torchrun and :func:`admm_snn.launch.launch_local`); the rendezvous is ``init_method`` or env:// ($MASTER_ADDR,
    $MASTER_PORT). ``backend`` defaults to "nccl" for a CUDA ``device`` and "gloo" otherwise.
    ``timeout_s`` bounds the rendezvous and every collective: a process that dies or hangs makes the
    others raise :class:`DistributedError` within it instead of waiting forever.
    """
    import torch.distributed as dist
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; install a build with Gloo")
    if dist.is_initialized():
        return Comm(dist.get_rank(), dist.get_world_size(), None, timeout_s, device, owns_group=False)
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not (0 <= rank < world_size):
        raise SettingsError(f"rank {rank} / world size {world_size} are inconsistent")
    if world_size == 1 and init_method is None and "MASTER_ADDR" not in os.environ:
        return Comm(0, 1, None, timeout_s, device)
    backend = backend or ("nccl" if str(device).startswith("cuda") else "gloo")
    if backend == "nccl" and not dist.is_nccl_available():
        raise SettingsError("--backend nccl: this torch build has no NCCL; use gloo (CPU)")
    if backend == "gloo" and not dist.is_gloo_available():
        raise SettingsError("--backend gloo: this torch build has no Gloo")
    if init_method is None:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise SettingsError(f"{' and '.join(missing)} not set: start the processes with torchrun or "
                                "'--nproc N' (admm_snn.launch), or pass init_method")
    kwargs = {}
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    where = init_method or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=float(timeout_s)), **kwargs)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DistributedError(f"rank {rank} of {world_size}: could not join the process group at {where} "
                               f"within {timeout_s:g} s ({first})") from None
    return Comm(rank, world_size, None, timeout_s, device, owns_group=True)


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Contiguous shard ``[start, stop)`` of ``n`` samples for ``rank``: sizes differ by at most one, the
    first ``n % world_size`` ranks get one more."""
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def fault_hook(rank: int, iteration: int) -> None:
    """Test-only fault injection through $ADMM_SNN_TEST_FAULT (see :data:`FAULT_ENV`)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, r, it = spec.split(":")
    if int(r) == rank and int(it) == iteration:
        if kind == "die":
            os._exit(1)
        if kind == "hang":
            time.sleep(3600)


# ----------------------------------------------------------------------------------------------------
# Data-parallel training
# ----------------------------------------------------------------------------------------------------

def init_state_shard(X: torch.Tensor, y: torch.Tensor, sizes: list[int], settings: ADMMSettings,
                     generator: torch.Generator, start: int, n_total: int,
                     cache: S.SolverCache | None = None) -> ADMMState:
    """The single-process starting state restricted to the samples ``start .. start + X.shape[1]``.

    init="forward" is per-sample (the weights come from ``generator``, the same draws on every rank), so
    it is :func:`solver.init_state` on the shard. init="uniform" draws, exactly as
    :func:`state.uniform_state` does for all ``n_total`` samples, the potentials of every layer and then
    the spikes of every hidden layer, each as a float64 (T, n_total, n) tensor, and keeps the slice; it
    consumes the generator exactly as the single process does.
    """
    if settings.init != "uniform":
        # the cache carries the all-reduce: the forward init fits the output block to the summed statistics
        return S.init_state(X, y, sizes, settings, generator, cache=cache if cache is not None else S.SolverCache(),
                            shard=(start, n_total))
    dtype, device = S.DTYPES[settings.dtype], X.device
    T, n_local = X.shape[0], X.shape[1]
    sl = slice(start, start + n_local)

    def draw(n):
        full = torch.rand(T, n_total, n, generator=generator, dtype=torch.float64)
        return full[:, sl].to(dtype=dtype, device=device).contiguous()

    weights = [torch.zeros(sizes[l], sizes[l - 1], dtype=dtype, device=device) for l in range(1, len(sizes))]
    pots = [draw(n) for n in sizes[1:]]
    spikes = [draw(n) for n in sizes[1:-1]]
    dual = torch.zeros(n_local, sizes[-1], dtype=dtype, device=device)
    return ADMMState(weights, pots, spikes, dual, 0)


def global_metrics(state: ADMMState, X, y, lab, settings: ADMMSettings, val, comm: Comm, sample=None,
                   scale: float | None = None) -> dict:
    """:func:`train.iteration_metrics` over the samples of every process: this shard's sums
    (:func:`train.report_sums`: counts, sums of squares, the per-sample part of the Lagrangian, on this
    shard's part ``sample`` of the report's subsample, the Lagrangian's part times ``scale``) added over
    processes in one float64 all-reduce, then the report's formulas (:func:`metrics.metrics_from_sums`).
    Accuracies, firing rates and spike gaps are exact counts over the measured samples, as in one process."""
    from .metrics import metrics_from_sums
    from .train import report_sums
    sums, own = report_sums(state, X, y, lab, settings, val, sample, scale)
    total = comm.all_reduce(torch.tensor(sums, dtype=torch.float64), kind="metrics").tolist()
    return metrics_from_sums(total, own, state, val is not None)


def _shard(frames, labels, comm: Comm, sharded: bool):
    """(local frames, local labels, start, n_total, shard sizes)."""
    n = frames.shape[1]
    if sharded:
        counts = torch.zeros(comm.world_size, dtype=torch.float64)
        counts[comm.rank] = n
        counts = [int(c) for c in comm.all_reduce(counts, kind="control").tolist()]
        start = sum(counts[:comm.rank])
        return frames, labels, start, sum(counts), counts
    counts = [b - a for a, b in (shard_bounds(n, comm.world_size, r) for r in range(comm.world_size))]
    a, b = shard_bounds(n, comm.world_size, comm.rank)
    return frames[:, a:b], labels[a:b], a, n, counts


class _ShardColumns:
    """The shard ``start:stop`` of every draw of a resampler that has no ``shard`` method."""

    def __init__(self, resample, start: int, stop: int):
        self.resample, self.start, self.stop = resample, start, stop
        self.key = getattr(resample, "key", "resample")

    def __call__(self, k: int) -> torch.Tensor:
        return self.resample(k)[:, self.start:self.stop]


def _local_resampler(resample, sharded: bool, settings: ADMMSettings, start: int, n_local: int):
    """This rank's part of the augmentation ``resample`` over all the data (None: no augmentation)."""
    if resample is None:
        return None
    if sharded:
        raise SettingsError("data augmentation (resample) in data-parallel runs needs all the data on every "
                            "process (sharded=False)")
    if not settings.reproject:
        raise SettingsError("data augmentation (resample) needs re-projection (reproject >= 1)")
    if hasattr(resample, "shard"):
        return resample.shard(start, start + n_local)
    return _ShardColumns(resample, start, start + n_local)


def _local_sample(idx, start: int, n_local: int):
    """The indices (in this shard) of the global subsample ``idx`` that fall in the shard
    ``[start, start + n_local)``; None when ``idx`` is None (every sample)."""
    if idx is None:
        return None
    return idx[(idx >= start) & (idx < start + n_local)] - start


def _write_jsonl(path: Path, m: dict, mode: str = "a") -> None:
    with open(path, mode) as fh:
        fh.write(json.dumps(m) + "\n")


def step_together(comm: "Comm", work, stopped_elsewhere) -> float:
    """Run ``work()`` on every process and agree on the outcome in one small all-reduce: if it raised
    an AdmmSnnError here (e.g. divergence on this shard), re-raise it after telling the others; if it
    failed on another process, raise a DistributedError with ``stopped_elsewhere()`` as the reason.
    Returns the slowest process's seconds for the work."""
    t0 = time.perf_counter()
    failure = None
    try:
        work()
    except DistributedError:
        raise
    except AdmmSnnError as exc:
        failure = exc
    step = time.perf_counter() - t0
    flag = comm.all_reduce(torch.tensor([1.0 if failure else 0.0, step], dtype=torch.float64), "max", "control")
    if failure is not None:
        raise failure
    if flag[0] > 0:
        raise DistributedError(f"rank {comm.rank}: {stopped_elsewhere()} (see its message)")
    return float(flag[1])


def train_distributed(frames: torch.Tensor, labels: torch.Tensor, hidden: list[int], settings: ADMMSettings, *,
                      n_classes: int | None = None, val: tuple | None = None, out: str | Path | None = None,
                      comm: Comm | None = None, sharded: bool = False, backend: str | None = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S, rank: int | None = None,
                      world_size: int | None = None, init_method: str | None = None,
                      progress: bool = False, device: str = "cpu", metrics_every: int = 1,
                      model_extra: dict | None = None, log=print, report_samples: int | None = None,
                      val_samples: int | None = None, resample=None):
    """Data-parallel ADMM: the same result as :func:`train.train` on all the data, computed by
    ``world_size`` processes that each hold a contiguous shard of the samples and their states.

    Every process calls this with the same arguments. ``frames`` (T, N, n_0) and ``labels`` (N,) are all
    the training data (each rank keeps its shard ``shard_bounds(N, world_size, rank)``), or, with
    ``sharded=True``, this rank's shard (the shards of ranks 0, 1, ... concatenated are the data set).
    ``val`` = (frames, labels) is split the same way. The process group is ``comm``, else the already
    initialised default group, else one created here from ``rank``/``world_size``/``init_method`` or the
    torchrun environment (destroyed at the end) with ``backend`` and ``timeout_s``.

    Returns a :class:`train.TrainResult` (identical on every rank, apart from ``state``, which holds
    this rank's shard). Each history entry has, besides :func:`train.iteration_metrics`' fields,
    ``allreduce_bytes`` (payload of the solver's all-reduces that iteration: the Gram and cross sums)
    and ``metrics_bytes`` (metrics and control reductions). Only rank 0 writes ``out``: metrics.jsonl,
    model.safetensors (admm_snn.io.save_model) and summary.json. Checkpoints and resume are not
    supported in data-parallel runs.

    ``report_samples``, ``val_samples`` bound the per-iteration report as in :func:`train.train`, on the
    same samples: the subsample is drawn over all the data and each rank measures the part of it in its
    shard.

    ``resample``: data augmentation over all the data, as in :func:`train.train` (not with
    ``sharded=True``): each rank redraws its shard (``resample.shard(start, stop)`` where the resampler
    has it, e.g. :class:`admm_snn.data.augment.ShiftResampler`; else the shard's columns of the whole
    draw), and a grouped shift's input Gram is each rank's Σ_g P_g G_g P_gᵀ summed over the ranks.
    """
    from .io import save_model
    from .resources import check_memory
    from .train import (VAL_SAMPLES, VAL_SEED, DrawnGram, TrainResult, _draw, _postfix, grouped, report_indices,
                        report_size)
    val_samples = VAL_SAMPLES if val_samples is None else val_samples

    if frames.dim() != 3:
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N, inputs)")
    if labels.shape != (frames.shape[1],):
        raise SettingsError(f"labels have shape {tuple(labels.shape)}; expected ({frames.shape[1]},)")
    if any(h < 1 for h in hidden):
        raise SettingsError(f"hidden sizes {list(hidden)} must all be >= 1")
    if metrics_every < 1:
        raise SettingsError("metrics_every must be >= 1")
    created = comm is None
    if comm is None:
        comm = connect(backend, timeout_s, rank=rank, world_size=world_size, init_method=init_method,
                       device=device)
    try:
        Xf, lab, start, n_total, counts = _shard(frames, labels, comm, sharded)
        if min(counts) < 1:
            raise SettingsError(f"{n_total} training samples cannot be split over {comm.world_size} processes; "
                                "use fewer processes or more data")
        k = int(labels.max()) + 1 if labels.numel() else 1
        k_all = int(comm.all_reduce(torch.tensor([float(k)], dtype=torch.float64), "max", "control")[0])
        n_classes = int(n_classes or k_all)
        dtype = S.DTYPES[settings.dtype]
        sizes = [frames.shape[2], *hidden, n_classes]
        # processes of this machine share its memory (on CUDA each has its own device)
        local_procs = 1 if str(device).startswith("cuda") else int(os.environ.get("LOCAL_WORLD_SIZE", comm.world_size))
        # the density of all the data, counted once: every process then takes the products (input_format's
        # rule) and the input Gram's kernel that one process on all the data takes
        nonzero = round(frame_density(Xf) * Xf.numel())
        both = comm.all_reduce(torch.tensor([float(nonzero), float(Xf.numel())], dtype=torch.float64),
                               kind="control").tolist()
        density = both[0] / max(both[1], 1.0)
        compact = Xf.dtype in (torch.uint8, torch.bool)  # binary frames stay compact, as in train()
        local = _local_resampler(resample, sharded, settings, start, Xf.shape[1])
        check_memory(sizes, frames.shape[0], Xf.shape[1] * local_procs, settings, device,
                     log=log if (progress and comm.is_main) else None,
                     frames_dtype=Xf.dtype if compact else None, density=density,
                     group_grams=int(local.groups) if grouped(local) else 0)
        X = aligned(Xf.to(device=device) if compact else Xf.to(device=device, dtype=dtype))
        if local is not None:
            X = X.clone()  # replaced in place at every redraw; the caller's frames stay as they are
        if not compact and not bool(torch.isfinite(X).all()):
            raise SettingsError("frames contain NaN or infinite values; check the input data")
        lab = lab.to(device)
        y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
        k_report = report_size(n_total, report_samples)
        sample = _local_sample(report_indices(n_total, k_report), start, X.shape[1])
        if val is not None:
            vf, vl, vstart, nv_total, _ = _shard(val[0], val[1], comm, sharded)
            keep = _local_sample(report_indices(nv_total, val_samples, VAL_SEED), vstart, vf.shape[1])
            if keep is not None:
                vf, vl = vf[:, keep], vl[keep]
            vf = vf.to(device=device) if vf.dtype in (torch.uint8, torch.bool) else vf.to(device=device, dtype=dtype)
            val = (aligned(vf), vl.to(device))
        generator = torch.Generator().manual_seed(settings.seed)
        cache = S.SolverCache()
        remember_density(cache, density)
        cache.reduce = lambda t: comm.all_reduce(t, "sum", "weights")
        state = init_state_shard(X, y, sizes, settings, generator, start, n_total, cache)
        drawn = DrawnGram(local, settings, X) if grouped(local) else None

        def drawn_gram(k: int) -> None:  # as in train(): draw k's input Gram, this shard's part all-reduced
            if drawn is not None:
                cache.input_gram = cache.reduce(drawn(k, state))

        def redraw() -> None:
            X.copy_(_draw(local, state.iteration + 1, X))
            S.forget_inputs(cache)
            drawn_gram(state.iteration + 1)
        drawn_gram(0)
        S.prepare_input_gram(state, X, settings, cache)  # every rank at the start, as in train()
        out = Path(out) if out is not None else None
        if out is not None and comm.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").write_text("")
        best, best_it, best_score, history = [w.clone() for w in state.weights], 0, -1.0, []
        bar = None
        if progress and comm.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=settings.iterations, desc=f"admm x{comm.world_size}", dynamic_ncols=True)
        t_start = time.perf_counter()
        try:
            while state.iteration < settings.iterations:
                fault_hook(comm.rank, state.iteration)
                comm.where = f"iteration {state.iteration + 1}"
                b0, s0 = dict(comm.bytes), comm.seconds["weights"]
                seconds = step_together(
                    comm, lambda: S.iterate(state, X, y, settings, cache, generator,
                                            redraw=redraw if local is not None else None),
                    lambda: f"another process stopped with an error at iteration {state.iteration}")
                comm.records.append({"iteration": state.iteration, "seconds": seconds,
                                     "bytes": comm.bytes["weights"] - b0["weights"],
                                     "allreduce_s": comm.seconds["weights"] - s0})
                last = state.iteration == settings.iterations
                if state.iteration % metrics_every == 0 or last:
                    m = global_metrics(state, X, y, lab, settings, val, comm, sample,
                                       scale=None if sample is None else n_total / k_report)
                    m["seconds"] = seconds
                    m["wall_s"] = (history[-1]["wall_s"] if history else 0.0) + m["seconds"]
                    m["allreduce_bytes"] = comm.bytes["weights"] - b0["weights"]
                    m["metrics_bytes"] = (comm.bytes["metrics"] + comm.bytes["control"]
                                          - b0["metrics"] - b0["control"])
                    m["world_size"] = comm.world_size
                    history.append(m)
                    score = m.get("val_accuracy", m["train_accuracy"] if val is None else -1.0)
                    if val is None or score > best_score:
                        best, best_it, best_score = [w.clone() for w in state.weights], state.iteration, score
                    if out is not None and comm.is_main:
                        _write_jsonl(out / "metrics.jsonl", m)
                    if bar is not None:
                        bar.set_postfix(_postfix(m), refresh=False)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t_start
        weights = best if val is not None else state.weights
        result = TrainResult([w.detach().clone() for w in weights], [w.detach().clone() for w in state.weights],
                             best_it if val is not None else state.iteration, history, state.iteration, wall,
                             state=state)
        if out is not None and comm.is_main:
            extra = {"distributed": {"mode": "data-parallel", "world_size": comm.world_size,
                                     "shard_sizes": counts, "bytes": dict(comm.bytes)}, **(model_extra or {})}
            save_model(out / "model.safetensors", result.weights, settings.delta, settings.theta,
                       {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **extra})
            summary = {"iterations": state.iteration, "best_iteration": result.best_iteration, "wall_s": wall,
                       "sizes": sizes, "settings": settings.to_dict(), "final": history[-1] if history else None,
                       **extra}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return result
    finally:
        if created:
            comm.close()


if __name__ == "__main__":  # this module has no command line of its own
    import sys
    print("admm-snn: error: start multi-process runs with 'python -m admm_snn.launch ...', "
          "'torchrun ... -m admm_snn.launch ...' or 'admm-snn train --nproc N ...'", file=sys.stderr)
    sys.exit(2)
