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
from .admm.settings import ADMMSettings
from .admm.sparse_inputs import frame_density, remember_density
from .admm.state import ADMMState
from .alignment import aligned, fresh
from .errors import CheckpointError, DataError, DivergenceError, SettingsError
from .io import (CHECKPOINT_FORMAT, FORMAT_VERSION, atomic_save, atomic_write_text, fingerprint, read_safetensors,
                 remove_stale_temporaries, save_model)
from .network import LIFParams, forward
from .metrics import accuracy_and_rates, lagrangian_of, metric_sums, metrics_from_sums  # noqa: F401 (accuracy_and_rates, lagrangian_of: API)
from .resources import check_memory

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainResult:
    """What a run returns: the chosen weights (best validation iteration, or the last without a
    validation split), the last iterate's weights, the per-iteration history and timings. ``status``:
    "finished", or "budget" when ``budget_s`` stopped the iterations early."""

    weights: list[torch.Tensor]
    final_weights: list[torch.Tensor]
    best_iteration: int
    history: list[dict]
    iterations: int
    wall_s: float
    status: str = "finished"
    state: ADMMState | None = field(default=None, repr=False)
    init_s: float = 0.0  # time of the initial state (0 on resume)
    compute_s: float = 0.0  # time of all iterations, without the report (as history's wall_s)


#: Defaults of the per-iteration report's bounds (``train(report_samples=None, val_samples=None)``): the
#: training-data metrics are measured on a fixed subsample of REPORT_FRACTION of the training samples, at
#: least REPORT_MIN (or all, when fewer) and at most REPORT_SAMPLES; the validation accuracy (which picks
#: the returned iteration) on at most VAL_SAMPLES validation samples. The report then costs about a tenth
#: of an iteration for the training part at any N (docs/datasets.md has the measurements).
REPORT_SAMPLES = 2000
REPORT_FRACTION = 0.1
REPORT_MIN = 100
VAL_SAMPLES = 10000
#: Seeds of those subsamples (fixed, apart from the training generator, so that the report never changes
#: the training and every run with the same data measures the same samples).
REPORT_SEED = 0x5EED
VAL_SEED = 0x5EED + 1


def spike_gap(state: ADMMState, frames, params: LIFParams) -> list[float]:
    """Fraction of hidden (t, sample, neuron) where the forward simulation's spike differs from round(a)."""
    trace = forward(state.weights, frames, params)
    return [float((fa != a.round()).float().mean()) for fa, a in zip(trace.spikes, state.spikes)]


def report_size(n: int, report_samples: int | None = None) -> int:
    """How many of ``n`` training samples the report measures: ``report_samples`` when given (0: all),
    else the default rule (REPORT_FRACTION of n, at least REPORT_MIN, at most REPORT_SAMPLES)."""
    if report_samples is None:
        return min(n, max(REPORT_MIN, min(REPORT_SAMPLES, int(REPORT_FRACTION * n))))
    return n if report_samples == 0 else min(n, int(report_samples))


def report_indices(n: int, k: int | None, seed: int = REPORT_SEED) -> torch.Tensor | None:
    """The fixed subsample of the per-iteration report: sorted indices of ``k`` of ``range(n)`` drawn with
    their own generator seeded with ``seed``; ``None`` (every sample) when ``k`` is None or 0 or ``k >= n``."""
    if not k or k >= n:
        return None
    return torch.sort(torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:int(k)]).values


def _sample_state(state: ADMMState, idx: torch.Tensor) -> ADMMState:
    """The per-sample variables of the samples ``idx``, with the (shared) weights and extensions."""
    idx = idx.to(state.dual.device)
    return ADMMState(state.weights, [z[:, idx] for z in state.potentials], [a[:, idx] for a in state.spikes],
                     state.dual[idx], state.iteration, state.aux)


def report_sums(state, frames, y, labels, settings, val=None, sample=None, scale=None) -> tuple[list[float], float]:
    """:func:`metrics.metric_sums` of the per-iteration report on the training samples ``sample``
    (indices, see :func:`report_indices`; None: all), the per-sample part of the Lagrangian multiplied by
    ``scale`` (default: samples / subsample, an unbiased estimate of the total). ``val`` is measured
    whole (bound it before, as :func:`train` does)."""
    n_all = frames.shape[1]
    state_m = state
    if sample is not None:
        idx = sample.to(frames.device)
        state_m, frames, y, labels = _sample_state(state, sample), frames[:, idx], y[idx], labels[idx]
        scale = n_all / max(len(sample), 1) if scale is None else scale
    state_m = S.copy_states_filled(state_m, frames, settings)  # the copies skipped by the shallow iteration
    sums, own = metric_sums(state_m, frames, y, labels, settings, val, lagrangian_of)
    if scale is not None:
        sums[0] *= scale
    return sums, own


def iteration_metrics(state, frames, y, labels, settings, val=None, sample=None, scale=None) -> dict:
    """The per-iteration report: Lagrangian, loss, residuals, forward accuracies, rates, spike gap (from
    sums over the samples, as a data-parallel run forms them: admm_snn.metrics).

    ``sample``: indices of the training samples to measure on (see :func:`report_indices`; None: all).
    Then ``train_accuracy``, ``firing_rate``, ``spike_gap``, ``loss`` (per sample) and the RMS residuals
    are those of the subsample, and ``lagrangian`` is the subsample's per-sample terms times ``scale``
    plus the weight-only terms (the L1 split). ``report_samples`` says how many training samples were
    measured, ``val_samples`` how many validation samples."""
    sums, own = report_sums(state, frames, y, labels, settings, val, sample, scale)
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


def require_checkpoint(out: Path) -> Path:
    """``out/checkpoint.safetensors``, or the one-line :class:`CheckpointError` that there is none to
    resume from (checked before a resumed run reads its data)."""
    path = Path(out) / CHECKPOINT
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"there is no checkpoint to resume from in {out} ({CHECKPOINT} is missing); "
                              "run without --resume to start afresh, or pass the --out of an earlier run")
    return path


def load_checkpoint(out: Path, settings: ADMMSettings, sizes, data_fp, device, weight_shapes=None,
                    steps_samples=None) -> Resumed:
    """Read ``out/checkpoint.safetensors`` and check it belongs to this run (same settings apart from the
    iteration count, same network, same data, same format version) and that every tensor has the shape
    and dtype the run needs and the generator state is one torch accepts. Anything else is a one-line
    :class:`CheckpointError`. ``weight_shapes``: the shape of every weight tensor when it is not
    (n_{l+1}, n_l) (a convolutional network's kernels); ``steps_samples``: the data's (T, N), which the
    checkpointed states must have."""
    path = require_checkpoint(out)
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
                              "same --hidden (or --arch) and dataset, or use a new --out")
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
    shapes = [tuple(w) for w in weight_shapes] if weight_shapes is not None else [(n[l + 1], n[l]) for l in range(L)]
    weights = [get(f"weights.{l}", shapes[l]) for l in range(L)]
    best = [get(f"best.{l}", shapes[l]) for l in range(L)]
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
    if steps_samples is not None and (T, N) != tuple(steps_samples):
        raise CheckpointError(f"{path} holds states for {(T, N)} (time steps, samples) but the data has "
                              f"{tuple(steps_samples)}")
    try:
        torch.Generator().set_state(gen)
    except RuntimeError:
        raise CheckpointError(f"{path}: the generator state is damaged; delete it to start afresh") from None
    state = ADMMState(weights, pots, spikes, dual, it, aux)
    return Resumed(state, best, best_it, best_score, hist, gen, elapsed, compute)


def _write_metrics(out: Path, history: list[dict]) -> None:
    """Rewrite ``out/metrics.jsonl`` from ``history`` (atomically: on resume it is rebuilt from the
    checkpoint, so lines written after the checkpoint by a killed run disappear, never duplicate)."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def _append_metrics(out: Path, m: dict,
                    advice: str = "the last checkpoint is intact (free disk space, then resume with --resume)") -> None:
    try:
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(m) + "\n")
    except OSError as exc:
        raise CheckpointError(f"could not append to {out / 'metrics.jsonl'}: {exc.strerror or exc}; {advice}") from None


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


def _check_report(report_samples, val_samples, budget_s) -> None:
    for name, v in (("report_samples", report_samples), ("val_samples", val_samples)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise SettingsError(f"{name}={v!r} must be None (the default rule), 0 (every sample) or a positive "
                                "integer")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or not budget_s > 0 or budget_s != budget_s):
        raise SettingsError(f"budget_s={budget_s!r} must be a number of seconds > 0, or None (no budget)")


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


def grouped(resample) -> bool:
    """Whether ``resample`` gives each draw's input Gram from its groups' Grams (``groups`` > 0 and
    ``input_gram(k, grams)``, as :class:`admm_snn.data.augment.ShiftResampler` with groups)."""
    return resample is not None and bool(getattr(resample, "groups", 0)) and hasattr(resample, "input_gram")


class DrawnGram:
    """``drawn(k, state)``: the input Gram of draw k of a :func:`grouped` resampler (this process's
    samples, not reduced), from its groups' Grams, formed at the first call from its unmoved frames
    (:func:`solver.group_input_grams`), in the settings' gram dtype."""

    def __init__(self, resample, settings: ADMMSettings, like: torch.Tensor):
        self.resample, self.settings, self.like, self.grams = resample, settings, like, []

    def __call__(self, k: int, state) -> torch.Tensor:
        r = self.resample
        if not self.grams:
            self.grams = S.group_input_grams(state, r.frames, r.sample_groups, r.groups, self.settings, self.like)
        return r.input_gram(k, self.grams).to(S.DTYPES[self.settings.gram_dtype])


def _draw(resample, k: int, X: torch.Tensor) -> torch.Tensor:
    """Draw k of the augmentation, checked against the training frames' shape, on their device."""
    from .data.augment import checked_draw
    return checked_draw(resample, k, X).to(device=X.device, dtype=X.dtype)


def train(frames: torch.Tensor, labels: torch.Tensor, hidden: list[int], settings: ADMMSettings, *,
          n_classes: int | None = None, val: tuple | None = None, out: str | Path | None = None,
          checkpoint_every: int = 0, resume: bool = False, progress: bool = True, device: str = "cpu",
          metrics_every: int = 1, model_extra: dict | None = None, log=print,
          report_samples: int | None = None, val_samples: int | None = None,
          budget_s: float | None = None, resample=None) -> TrainResult:
    """Train a network ``inputs → hidden... → n_classes`` with ADMM on time-major ``frames`` (T, N, n_0).

    ``val`` = (frames, labels) selects the returned weights (best validation accuracy of the forward
    simulation).

    The per-iteration report (every ``metrics_every`` iterations) measures the training data on a fixed
    subsample of ``report_samples`` samples (:func:`report_indices`; None: :func:`report_size`'s default,
    a tenth of N between 100 and 2,000; 0: all) and the validation accuracy on at most ``val_samples``
    validation samples (a fixed subsample of a larger validation set; None: :data:`VAL_SAMPLES`; 0: all),
    so its cost stays a small part of an iteration at any N. ``report_samples`` and ``val_samples`` in
    each history entry say how many samples were measured.

    ``budget_s``: stop once the training compute (initialisation plus iterations, without the report)
    has reached this many seconds, after the iteration during which it was reached; the history and the
    result's ``status`` ("budget") say so. None: run ``settings.iterations`` iterations.

    With ``out``, writes ``metrics.jsonl`` every iteration, ``checkpoint.safetensors`` every
    ``checkpoint_every`` iterations (and at the end), ``model.safetensors`` and ``summary.json``, each
    atomically. ``resume`` continues from ``out``'s checkpoint and gives bitwise the weights, history
    (apart from timings) and best-iteration choice of an uninterrupted run (same device and threads).
    ``settings.iterations`` may be raised on resume to train further; every other setting must match.

    ``resample``: data augmentation, a callable ``resample(k)`` giving the training frames of draw k
    (same shape and dtype; e.g. :class:`admm_snn.data.augment.ShiftResampler`). At every re-projection
    (iteration k, ``settings.reproject``) the frames are replaced by draw k just before it, the input
    caches are rebuilt, and the states, output block and dual follow the new frames (``solver.iterate``'s
    ``redraw``); every block stays the exact minimiser for the frames it sees. Its ``key`` attribute, if
    any, is part of the checkpoint's data fingerprint, so a resume with other augmentation is refused.

    Errors are one-line :class:`AdmmSnnError` subclasses: bad arguments (SettingsError/DataError), an
    unwritable or full output folder and foreign or damaged checkpoints (CheckpointError), NaN/inf during
    training (DivergenceError, naming the iteration, the block and the last checkpoint, which stays).
    """
    if not isinstance(settings, ADMMSettings):
        raise SettingsError(f"settings must be an ADMMSettings, not {type(settings).__name__}")
    _check_inputs(frames, labels, hidden, n_classes, val, checkpoint_every, metrics_every)
    _check_report(report_samples, val_samples, budget_s)
    dtype = S.DTYPES[settings.dtype]
    n_classes = int(n_classes or int(labels.max()) + 1)
    sizes = [int(frames.shape[2]), *[int(h) for h in hidden], n_classes]
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise SettingsError("resume needs an output folder (--out DIR)")
    if resume:
        require_checkpoint(out)
    if out is not None:
        _prepare_out(out)
    compact = frames.dtype in (torch.uint8, torch.bool)  # binary spike frames stay compact (exact)
    density = frame_density(frames)  # counted once: the memory check and the solver's input_format rule
    check_memory(sizes, frames.shape[0], frames.shape[1], settings, device, log=log if progress else None,
                 frames_dtype=frames.dtype if compact else None, density=density,
                 group_grams=int(resample.groups) if grouped(resample) else 0)
    # in torch-aligned memory, like every tensor the run makes (frames read from a file may not be): the
    # products then round alike in every run on these frames (alignment.py)
    X = aligned(frames.to(device=device) if compact else frames.to(device=device, dtype=dtype))
    if not compact and not bool(torch.isfinite(X).all()):
        raise DataError(f"frames contain NaN or infinite values ({_first_nonfinite(X)}); check the input data")
    if val is not None:
        v, vl = val
        vidx = report_indices(v.shape[1], VAL_SAMPLES if val_samples is None else val_samples, VAL_SEED)
        if vidx is not None:
            v, vl = v[:, vidx], vl[vidx]
        v = aligned(v.to(device=device) if v.dtype in (torch.uint8, torch.bool) else v.to(device=device, dtype=dtype))
        val = (v, vl.to(device))
        if not bool(torch.isfinite(val[0]).all()):
            raise DataError(f"validation frames contain NaN or infinite values ({_first_nonfinite(val[0])})")
    data_fp = fingerprint(frames, labels)
    if resample is not None:
        if not settings.reproject:
            raise SettingsError("data augmentation (resample) needs re-projection (reproject >= 1)")
        data_fp = f"{data_fp}+{getattr(resample, 'key', 'resample')}"
        X = X.clone()  # replaced in place at every redraw; the caller's frames stay as they are
    lab = labels.to(device=device, dtype=torch.int64)
    y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
    drawn = DrawnGram(resample, settings, X) if grouped(resample) else None

    def drawn_gram(k: int, st=None) -> None:
        """A grouped resampler gives draw k's input Gram (draw 0, the frames themselves, included); every
        other resampler, and a run without one, leaves it to the solver, which forms it from the frames."""
        if drawn is not None:
            cache.input_gram = cache.reduce(drawn(k, st or state))
    sample = report_indices(X.shape[1], report_size(X.shape[1], report_samples))
    generator = torch.Generator().manual_seed(settings.seed)
    cache = S.SolverCache()
    remember_density(cache, density)
    if resume:
        r = load_checkpoint(out, settings, sizes, data_fp, device, steps_samples=X.shape[:2])
        generator.set_state(r.generator_state)
        state, best, best_it, history, best_score = r.state, r.best, r.best_iteration, r.history, r.best_score
        last_draw = state.iteration - state.iteration % settings.reproject if resample is not None else 0
        if last_draw:  # the frames the checkpointed states were projected on
            X.copy_(_draw(resample, last_draw, X))
        drawn_gram(last_draw, state)
        S.prepare_input_gram(state, X, settings, cache)
        elapsed0, compute_s = r.elapsed_s, r.compute_s
    else:
        t_init = time.perf_counter()
        state = S.init_state(X, y, sizes, settings, generator, cache=cache)
        drawn_gram(0, state)
        S.prepare_input_gram(state, X, settings, cache)  # no-op where drawn_gram formed it
        best, best_it, history, best_score = [w.clone() for w in state.weights], 0, [], -1.0
        elapsed0, compute_s = 0.0, 0.0
        init_s = time.perf_counter() - t_init
    if resume:
        init_s = 0.0  # the budget counts the restored iterations' compute time, not the first initialisation

    def spent() -> bool:
        return budget_s is not None and init_s + compute_s >= budget_s
    if out is not None:
        _write_metrics(out, history)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=settings.iterations, initial=state.iteration, desc="admm", dynamic_ncols=True)
    t_start = time.perf_counter()
    saved_it = state.iteration if resume else None

    def redraw() -> None:  # the frames of this iteration's draw, in place, before its re-projection
        X.copy_(_draw(resample, state.iteration + 1, X))
        S.forget_inputs(cache)
        drawn_gram(state.iteration + 1)
    try:
        while state.iteration < settings.iterations and not spent():
            t0 = time.perf_counter()
            try:
                S.iterate(state, X, y, settings, cache, generator, redraw=redraw if resample is not None else None)
            except DivergenceError as exc:
                where = (f"the last checkpoint (iteration {saved_it}) in {out} is intact" if saved_it is not None
                         else "no checkpoint of this run was written")
                raise DivergenceError(f"{exc}; {where}") from None
            step_s = time.perf_counter() - t0
            compute_s += step_s
            last = state.iteration == settings.iterations or spent()
            if state.iteration % metrics_every == 0 or last:
                t0 = time.perf_counter()
                m = iteration_metrics(state, X, y, lab, settings, val, sample)
                m["seconds"] = step_s
                m["wall_s"] = compute_s
                m["report_s"] = time.perf_counter() - t0
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
    status = "budget" if state.iteration < settings.iterations and spent() else "finished"
    result = TrainResult([w.detach().clone() for w in weights], [w.detach().clone() for w in state.weights],
                         best_it if val is not None else state.iteration, history, state.iteration, wall,
                         status=status, state=state, init_s=init_s, compute_s=compute_s)
    if out is not None:
        save_model(out / "model.safetensors", result.weights, settings.delta, settings.theta,
                   {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **(model_extra or {})})
        summary = {"iterations": state.iteration, "best_iteration": result.best_iteration, "wall_s": wall,
                   "compute_s": compute_s, "status": status, "sizes": sizes, "settings": settings.to_dict(),
                   "final": history[-1] if history else None, **(model_extra or {})}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return result

