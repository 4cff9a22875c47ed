"""The training loop: metrics every iteration, live progress, checkpoints and exact resume."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .admm import solver as S
from .admm.lagrangian import lagrangian_terms
from .admm.penalties import lagrangian_penalties
from .admm.settings import ADMMSettings
from .admm.sparse_inputs import frame_density, remember_density
from .admm.state import ADMMState
from .alignment import aligned, fresh
from .errors import CheckpointError, DataError, DivergenceError, SettingsError
from .io import (CHECKPOINT_FORMAT, FORMAT_VERSION, atomic_save, atomic_write_text, fingerprint, read_safetensors,
                 remove_stale_temporaries, save_model)
from .metrics import accuracy_and_rates, metric_sums, metrics_from_sums  # noqa: F401 (accuracy_and_rates: API)
from .resources import check_memory

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainResult:
    """What a run returns: the chosen weights (best validation iteration, or the last without a
    validation split), the last iterate's weights, the per-iteration history and timings."""

    weights: list[torch.Tensor]
    final_weights: list[torch.Tensor]
    best_iteration: int
    history: list[dict]
    iterations: int
    wall_s: float
    status: str = "finished"
    state: ADMMState | None = field(default=None, repr=False)


def lagrangian_of(state, frames, y, settings) -> dict:
    """:func:`lagrangian_terms` with every penalty of ``settings`` (per-layer ρ_l, β_l when adapted, the
    rate and L1 terms)."""
    return lagrangian_terms(state, frames, y, *lagrangian_penalties(state, settings), settings.lif,
                            settings.output_rho, rate_penalty=settings.rate_penalty, l1=settings.l1,
                            l1_penalty=settings.l1_penalty)


def iteration_metrics(state, frames, y, labels, settings, val=None) -> dict:
    """The per-iteration report: Lagrangian, loss, residuals, forward accuracies, rates, spike gap (from
    sums over the samples, as a data-parallel run forms them: admm_snn.metrics)."""
    sums, own = metric_sums(state, frames, y, labels, settings, val, lagrangian_of)
    return metrics_from_sums(sums, own, state, val is not None)


def _checkpoint_tensors(state: ADMMState, best: list[torch.Tensor], generator: torch.Generator) -> dict:
    t = {"dual": state.dual, "generator": generator.get_state()}
    for i, w in enumerate(state.weights):
        t[f"weights.{i}"] = w
        t[f"best.{i}"] = best[i]
    for i, z in enumerate(state.potentials):
        t[f"potentials.{i}"] = z
    for i, a in enumerate(state.spikes):
        t[f"spikes.{i}"] = a
    for k, v in state.aux.items():
        t[f"aux.{k}"] = v
    return t


def save_checkpoint(out: Path, state, best, best_iteration, history, generator, settings, sizes, data_fp,
                    best_score: float = -1.0, elapsed_s: float = 0.0, compute_s: float = 0.0) -> None:
    """Atomically write the full training state to ``out/checkpoint.safetensors``: every tensor of the
    state, the best weights so far, the generator state; in the header the settings, network, data
    fingerprint, iteration, best-iteration bookkeeping, the metrics history and the time spent so far."""
    meta = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "iteration": str(state.iteration),
            "settings": json.dumps(settings.to_dict(), sort_keys=True), "sizes": json.dumps(list(sizes)),
            "data": data_fp, "best_iteration": str(best_iteration), "best_score": repr(float(best_score)),
            "elapsed_s": repr(float(elapsed_s)), "compute_s": repr(float(compute_s)),
            "history": json.dumps(history)}
    atomic_save(_checkpoint_tensors(state, best, generator), meta, Path(out) / CHECKPOINT)


@dataclass
class Resumed:
    """What :func:`load_checkpoint` restores."""

    state: ADMMState
    best: list[torch.Tensor]
    best_iteration: int
    best_score: float
    history: list[dict]
    generator_state: torch.Tensor
    elapsed_s: float
    compute_s: float

    def __iter__(self):  # backwards compatible unpacking: state, best, best_it, history, gen_state
        return iter((self.state, self.best, self.best_iteration, self.history, self.generator_state))


def _settings_difference(saved: dict, now: dict) -> str | None:
    """The first setting (other than ``iterations``) in which a checkpoint's settings differ from this
    run's. A setting the checkpoint does not record (added to admm-snn later) counts as its default."""
    defaults = ADMMSettings().to_dict()
    for k in sorted(set(saved) | set(now)):
        if k == "iterations":
            continue
        old = saved.get(k, defaults.get(k))
        if old != now.get(k, defaults.get(k)):
            return k
    return None


def load_checkpoint(out: Path, settings: ADMMSettings, sizes, data_fp, device) -> Resumed:
    """Read ``out/checkpoint.safetensors`` and check it belongs to this run (same settings apart from the
    iteration count, same network, same data, same format version) and that every tensor has the shape
    and dtype the run needs. Anything else is a one-line :class:`CheckpointError`."""
    path = Path(out) / CHECKPOINT
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"there is no checkpoint to resume from in {out} ({CHECKPOINT} is missing); "
                              "run without --resume to start afresh, or pass the --out of an earlier run")
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT)
    try:
        saved = json.loads(meta["settings"])
        it, hist = int(meta["iteration"]), json.loads(meta["history"])
        saved_sizes, best_it = json.loads(meta["sizes"]), int(meta["best_iteration"])
        best_score = float(meta.get("best_score", "-1.0"))
        elapsed, compute = float(meta.get("elapsed_s", "0")), float(meta.get("compute_s", "0"))
        if not isinstance(saved, dict) or not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
            raise ValueError("settings/history")
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has a damaged header (field {exc}); delete it to start afresh") from None
    now = settings.to_dict()
    k = _settings_difference(saved, now)
    if k is not None:
        raise CheckpointError(f"{path} was written with {k}={saved.get(k)!r} but this run has {k}={now.get(k)!r}; "
                              "resume with the same settings or use a new --out")
    if saved_sizes != list(sizes):
        raise CheckpointError(f"{path} is for a network {saved_sizes}, this run is {list(sizes)}; resume with the "
                              "same --hidden and dataset, or use a new --out")
    if meta.get("data") != data_fp:
        raise CheckpointError(f"{path} was trained on other data (fingerprint {meta.get('data')} != {data_fp}); "
                              "resume with the same dataset options")
    if it < 0:
        raise CheckpointError(f"{path} has iteration={it}; the header is damaged, delete it to start afresh")
    L = len(sizes) - 1
    dtype = S.DTYPES[settings.dtype]
    n = [int(x) for x in sizes]

    def get(key, shape, dt=dtype):
        if key not in tensors:
            raise CheckpointError(f"{path} lacks tensor {key!r}; it is incomplete, delete it to start afresh")
        t = tensors[key]
        if (shape is not None and tuple(t.shape) != tuple(shape)) or t.dtype != dt:
            raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(t.shape)} and dtype {t.dtype}, "
                                  f"expected {tuple(shape) if shape is not None else '(any)'} and {dt}; "
                                  "the file is damaged or from another run")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {key!r} has NaN or infinite values; delete it to start afresh")
        return fresh(t, device)  # in torch-aligned memory (alignment.py)

    z0 = tensors.get("potentials.0")
    T, N = (int(z0.shape[0]), int(z0.shape[1])) if z0 is not None and z0.dim() == 3 else (-1, -1)
    weights = [get(f"weights.{l}", (n[l + 1], n[l])) for l in range(L)]
    best = [get(f"best.{l}", (n[l + 1], n[l])) for l in range(L)]
    pots = [get(f"potentials.{l}", (T, N, n[l + 1])) for l in range(L)]
    spikes = [get(f"spikes.{l}", (T, N, n[l + 1])) for l in range(L - 1)]
    dual = get("dual", (N, n[-1]))
    gen = get("generator", None, torch.uint8).cpu()
    aux = {}
    for key in sorted(tensors):
        if key.startswith("aux."):
            t = tensors[key]
            if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: tensor {key!r} has NaN or infinite values; delete it to start afresh")
            aux[key[len("aux."):]] = fresh(t, device)
    state = ADMMState(weights, pots, spikes, dual, it, aux)
    return Resumed(state, best, best_it, best_score, hist, gen, elapsed, compute)


def _write_metrics(out: Path, history: list[dict]) -> None:
    """Rewrite ``out/metrics.jsonl`` from ``history`` (atomically: on resume it is rebuilt from the
    checkpoint, so lines written after the checkpoint by a killed run disappear, never duplicate)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def _append_metrics(out: Path, m: dict) -> None:
    try:
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(m) + "\n")
    except OSError as exc:
        raise CheckpointError(f"could not append to {out / 'metrics.jsonl'}: {exc.strerror or exc}; the last "
                              "checkpoint is intact (free disk space, then resume with --resume)") from None


def _prepare_out(out: Path) -> None:
    """Create the output folder and make sure files can be created in it, before any training starts."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output folder {out} is a file; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CheckpointError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose a writable "
                              "--out folder") from None
    remove_stale_temporaries(out)


def _check_inputs(frames, labels, hidden, n_classes, val, checkpoint_every, metrics_every):
    """One-line SettingsError/DataError for anything train() cannot use."""
    if not isinstance(frames, torch.Tensor):
        raise SettingsError(f"frames must be a torch.Tensor (T, N, inputs), not {type(frames).__name__}")
    if frames.dim() != 3:
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N, inputs)")
    if frames.is_complex():
        raise SettingsError(f"frames have dtype {frames.dtype}; expected real numbers")
    T, N, n_in = frames.shape
    if T < 1 or N < 1 or n_in < 1:
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; need at least 1 time step, 1 sample and "
                            "1 input")
    if not isinstance(labels, torch.Tensor) or labels.shape != (N,):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise SettingsError(f"labels have shape {shape}; expected ({N},), one class index per sample")
    if labels.dtype.is_floating_point or labels.is_complex() or labels.dtype == torch.bool:
        raise SettingsError(f"labels have dtype {labels.dtype}; expected integer class indices")
    if int(labels.min()) < 0:
        raise DataError(f"labels contain {int(labels.min())}; class indices must be >= 0")
    if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1):
        raise SettingsError(f"n_classes={n_classes!r} must be a positive integer")
    if n_classes is not None and int(labels.max()) >= n_classes:
        raise DataError(f"labels contain {int(labels.max())} but n_classes={n_classes}; pass a larger n_classes")
    if not isinstance(hidden, (list, tuple)) or not all(isinstance(h, int) and not isinstance(h, bool)
                                                        for h in hidden):
        raise SettingsError(f"hidden={hidden!r} must be a list of integer layer widths")
    if any(h < 1 for h in hidden):
        raise SettingsError(f"hidden sizes {list(hidden)} must all be >= 1")
    for name, v, lo in (("checkpoint_every", checkpoint_every, 0), ("metrics_every", metrics_every, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise SettingsError(f"{name}={v!r} must be an integer >= {lo}")
    if val is not None:
        if not (isinstance(val, (tuple, list)) and len(val) == 2 and all(isinstance(v, torch.Tensor) for v in val)):
            raise SettingsError("val must be a pair (frames, labels) of tensors")
        vf, vl = val
        if vf.dim() != 3 or vf.shape[0] < 1 or vf.shape[2] != n_in or vl.shape != (vf.shape[1],):
            raise SettingsError(f"validation frames {tuple(vf.shape)} / labels {tuple(vl.shape)} do not fit: "
                                f"expected (T, M, {n_in}) and (M,)")
        if vl.dtype.is_floating_point or vl.dtype == torch.bool:
            raise SettingsError(f"validation labels have dtype {vl.dtype}; expected integer class indices")


def _first_nonfinite(x: torch.Tensor) -> str:
    idx = torch.nonzero(~torch.isfinite(x))[0].tolist()
    return f"time step {idx[0]}, sample {idx[1]}, input {idx[2]} is {float(x[tuple(idx)])}"


def _postfix(m: dict) -> dict:
    d = {"L": f"{m['lagrangian']:.3g}", "train": f"{m['train_accuracy']:.3f}"}
    if "val_accuracy" in m:
        d["val"] = f"{m['val_accuracy']:.3f}"
    d["gap"] = ",".join(f"{g:.3f}" for g in m["spike_gap"])
    d["rate"] = ",".join(f"{r:.3f}" for r in m["firing_rate"])
    return d


def train(frames: torch.Tensor, labels: torch.Tensor, hidden: list[int], settings: ADMMSettings, *,
          n_classes: int | None = None, val: tuple | None = None, out: str | Path | None = None,
          checkpoint_every: int = 0, resume: bool = False, progress: bool = True, device: str = "cpu",
          metrics_every: int = 1, model_extra: dict | None = None, log=print) -> TrainResult:
    """Train a network ``inputs → hidden... → n_classes`` with ADMM on time-major ``frames`` (T, N, n_0).

    ``val`` = (frames, labels) selects the returned weights (best validation accuracy of the forward
    simulation). With ``out``, writes ``metrics.jsonl`` every iteration, ``checkpoint.safetensors`` every
    ``checkpoint_every`` iterations (and at the end), ``model.safetensors`` and ``summary.json``, each
    atomically. ``resume`` continues from ``out``'s checkpoint and gives bitwise the weights, history
    (apart from timings) and best-iteration choice of an uninterrupted run (same device and threads).
    ``settings.iterations`` may be raised on resume to train further; every other setting must match.

    Errors are one-line :class:`AdmmSnnError` subclasses: bad arguments (SettingsError/DataError), an
    unwritable or full output folder and foreign or damaged checkpoints (CheckpointError), NaN/inf during
    training (DivergenceError, naming the iteration, the block and the last checkpoint, which stays).
    """
    if not isinstance(settings, ADMMSettings):
        raise SettingsError(f"settings must be an ADMMSettings, not {type(settings).__name__}")
    _check_inputs(frames, labels, hidden, n_classes, val, checkpoint_every, metrics_every)
    dtype = S.DTYPES[settings.dtype]
    n_classes = int(n_classes or int(labels.max()) + 1)
    sizes = [int(frames.shape[2]), *[int(h) for h in hidden], n_classes]
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise SettingsError("resume needs an output folder (--out DIR)")
    if resume and not (out / CHECKPOINT).exists():
        load_checkpoint(out, settings, sizes, "", device)  # raises the "no checkpoint to resume from" error
    if out is not None:
        _prepare_out(out)
    compact = frames.dtype in (torch.uint8, torch.bool)  # binary spike frames stay compact (exact)
    density = frame_density(frames)  # counted once: the memory check and the solver's input_format rule
    check_memory(sizes, frames.shape[0], frames.shape[1], settings, device, log=log if progress else None,
                 frames_dtype=frames.dtype if compact else None, density=density)
    # in torch-aligned memory, like every tensor the run makes (frames read from a file may not be): the
    # products then round alike in every run on these frames (alignment.py)
    X = aligned(frames.to(device=device) if compact else frames.to(device=device, dtype=dtype))
    if not compact and not bool(torch.isfinite(X).all()):
        raise DataError(f"frames contain NaN or infinite values ({_first_nonfinite(X)}); check the input data")
    if val is not None:
        v = val[0]
        v = aligned(v.to(device=device) if v.dtype in (torch.uint8, torch.bool) else v.to(device=device, dtype=dtype))
        val = (v, val[1].to(device))
        if not bool(torch.isfinite(val[0]).all()):
            raise DataError(f"validation frames contain NaN or infinite values ({_first_nonfinite(val[0])})")
    data_fp = fingerprint(frames, labels)
    lab = labels.to(device=device, dtype=torch.int64)
    y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
    generator = torch.Generator().manual_seed(settings.seed)
    cache = S.SolverCache()
    remember_density(cache, density)
    if resume:
        r = load_checkpoint(out, settings, sizes, data_fp, device)
        if r.state.potentials[0].shape[:2] != X.shape[:2]:
            raise CheckpointError(f"{out / CHECKPOINT} holds states for {tuple(r.state.potentials[0].shape[:2])} "
                                  f"(time steps, samples) but the data has {tuple(X.shape[:2])}")
        try:
            generator.set_state(r.generator_state)
        except RuntimeError:
            raise CheckpointError(f"{out / CHECKPOINT}: the generator state is damaged; delete it to start "
                                  "afresh") from None
        state, best, best_it, history, best_score = r.state, r.best, r.best_iteration, r.history, r.best_score
        elapsed0, compute_s = r.elapsed_s, r.compute_s
    else:
        state = S.init_state(X, y, sizes, settings, generator, cache=cache)
        best, best_it, history, best_score = [w.clone() for w in state.weights], 0, [], -1.0
        elapsed0, compute_s = 0.0, 0.0
    if out is not None:
        _write_metrics(out, history)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=settings.iterations, initial=state.iteration, desc="admm", dynamic_ncols=True)
    t_start = time.perf_counter()
    saved_it = state.iteration if resume else None
    try:
        while state.iteration < settings.iterations:
            t0 = time.perf_counter()
            try:
                S.iterate(state, X, y, settings, cache, generator)
            except DivergenceError as exc:
                where = (f"the last checkpoint (iteration {saved_it}) in {out} is intact" if saved_it is not None
                         else "no checkpoint of this run was written")
                raise DivergenceError(f"{exc}; {where}") from None
            step_s = time.perf_counter() - t0
            compute_s += step_s
            last = state.iteration == settings.iterations
            if state.iteration % metrics_every == 0 or last:
                m = iteration_metrics(state, X, y, lab, settings, val)
                m["seconds"] = step_s
                m["wall_s"] = compute_s
                history.append(m)
                score = m.get("val_accuracy", m["train_accuracy"] if val is None else -1.0)
                if val is None or score > best_score:
                    best, best_it, best_score = [w.clone() for w in state.weights], state.iteration, score
                if out is not None:
                    _append_metrics(out, m)
                if bar is not None:
                    bar.set_postfix(_postfix(m), refresh=False)
            if bar is not None:
                bar.update(1)
            if out is not None and checkpoint_every and (state.iteration % checkpoint_every == 0 or last):
                save_checkpoint(out, state, best, best_it, history, generator, settings, sizes, data_fp,
                                best_score, elapsed0 + time.perf_counter() - t_start, compute_s)
                saved_it = state.iteration
    finally:
        if bar is not None:
            bar.close()
    wall = elapsed0 + time.perf_counter() - t_start
    weights = best if val is not None else state.weights
    result = TrainResult([w.detach().clone() for w in weights], [w.detach().clone() for w in state.weights],
                         best_it if val is not None else state.iteration, history, state.iteration, wall,
                         state=state)
    if out is not None:
        save_model(out / "model.safetensors", result.weights, settings.delta, settings.theta,
                   {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **(model_extra or {})})
        summary = {"iterations": state.iteration, "best_iteration": result.best_iteration, "wall_s": wall,
                   "compute_s": compute_s, "sizes": sizes, "settings": settings.to_dict(),
                   "final": history[-1] if history else None, **(model_extra or {})}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return result

