"""Training convolutional LIF networks with ADMM: :func:`fit_conv` (no files, no CLI) and
:func:`train_conv`, which also writes the run's folder (model, metrics, summary) like :func:`train.train`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .admm import conv_solver as CS
from .admm import solver as S
from .admm.settings import ADMMSettings
from .errors import SettingsError
from .io import atomic_write_text, fingerprint, save_model
from .resources import check_conv_memory
from .train import (_append_metrics, _draw, _prepare_out, _write_metrics, load_checkpoint, require_checkpoint,
                    save_checkpoint)


@dataclass
class ConvFitResult:
    """The final weights, the weights of the best validation accuracy (the final ones without
    validation data), one history entry per iteration (iteration 0: the start), the state and problem;
    ``best_iteration`` (the iteration of ``best_weights``), ``iterations`` (run), ``status`` ("finished",
    or "budget" when ``budget_s`` stopped the run early) and ``compute_s`` (initialisation and iterations,
    without the per-iteration report)."""

    weights: list
    best_weights: list
    history: list = field(default_factory=list)
    state: object = None
    problem: object = None
    best_iteration: int = 0
    iterations: int = 0
    status: str = "finished"
    compute_s: float = 0.0
    wall_s: float = 0.0


def _accuracy(weights, frames, labels, problem, settings) -> float:
    return float((CS.predict(weights, frames, problem, settings) == labels.to(torch.long)).to(torch.float64).mean())


def check_arguments(settings, iterations, budget_s, frames, labels,
                    sharded: bool = False) -> tuple[ADMMSettings, int]:
    """(settings, iterations) after the checks of :func:`fit_conv`'s arguments (one-line SettingsErrors),
    ``iterations`` None → ``settings.iterations``; ``labels`` a tensor. ``sharded`` (a data-parallel
    process's shard, distributed_conv.py): an empty shard is allowed here (refused on every rank later)."""
    settings = settings or ADMMSettings()
    if not isinstance(settings, ADMMSettings):
        raise SettingsError(f"settings must be an ADMMSettings, not {type(settings).__name__}")
    iterations = settings.iterations if iterations is None else iterations
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise SettingsError(f"iterations={iterations!r} must be an integer >= 0")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or not budget_s > 0 or budget_s == float("inf")):
        raise SettingsError(f"budget_s={budget_s!r} must be a finite number of seconds > 0 (or None: no budget)")
    if not isinstance(frames, torch.Tensor) or frames.dim() not in (3, 5):
        raise SettingsError(f"frames must be a tensor (T, N, C*H*W) or (T, N, C, H, W), not "
                            f"{tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__}")
    if labels.dim() != 1 or labels.shape[0] != frames.shape[1]:
        raise SettingsError(f"labels have shape {tuple(labels.shape)}; expected ({frames.shape[1]},), one per sample")
    if (labels.numel() == 0 and not sharded) or (labels.numel() and int(labels.min()) < 0):
        raise SettingsError("labels must be class indices >= 0 (and at least one sample)")
    return settings, iterations


def fit_conv(frames: torch.Tensor, labels: torch.Tensor, arch, input_shape, settings: ADMMSettings | None = None,
             iterations: int | None = None, *, n_classes: int | None = None, val: tuple | None = None,
             cg_tol: float = 1e-4, cg_max_iterations: int = 100, spike_solve: str = "auto",
             budget_s: float | None = None, on_record=None, log=None, out: str | Path | None = None, checkpoint_every: int = 0,
             resume: bool = False, on_resume=None, resample=None) -> ConvFitResult:
    """Train the convolutional network ``arch`` (e.g. ``"12c5-p2-32c5-p2-128"``) on time-major ``frames``
    (T, N, C·H·W) or (T, N, C, H, W) of inputs of ``input_shape`` (C, H, W) with the conv ADMM solver
    (admm/conv_solver.py) for ``iterations`` iterations (default ``settings.iterations``).

    History entries: ``iteration``, ``train_accuracy`` (of the forward simulation, the output argmax),
    ``val_accuracy`` (with ``val`` = (frames, labels)), ``firing_rate`` (per hidden layer), ``seconds``
    (the iteration's compute), ``wall_s`` (the compute so far, initialisation included), ``cg`` (iterations
    and relative residual of each CG spike solve, by layer; the layers solved directly are not in it).

    ``spike_solve``: how the spikes of a layer below a convolution are solved: "direct" (exact, through
    Cholesky factors of the pooled space's matrix), "cg" (conjugate gradients to the relative residual
    ``cg_tol``, at most ``cg_max_iterations``) or "auto" (per layer, by their FLOPs:
    :func:`admm.conv.spike_solve_method`).

    ``budget_s``: stop once the compute (initialisation plus iterations, without the report) has reached
    this many seconds, after the iteration during which it was reached (the result's ``status`` is then
    "budget"). ``on_record``: called with every history entry as it is made (e.g. to write it to a file).
    Before the start, the memory the run needs is estimated (:func:`resources.check_conv_memory`; printed
    through ``log`` when given) and a run that cannot fit stops with a one-line ResourceError.
    With ``out``, ``checkpoint.safetensors`` is written there every ``checkpoint_every`` iterations and
    at the end (atomically; the dense trainer's format, the kernels as they are, the data fingerprint
    naming the architecture), and ``resume`` continues from it: bitwise the weights, history and best
    iteration of the uninterrupted run (``iterations`` may be raised to train further); ``on_resume`` is
    called with the restored history (e.g. to rewrite a metrics file to it).
    ``resample``: data augmentation as in :func:`train.train`, a callable ``resample(k)`` giving the
    training frames of draw k (:class:`admm_snn.data.augment.ShiftResampler`); at every re-projection the
    frames become the next draw (the caller's stay as they are) and the first conv layer's patch Gram is
    formed again from them; a resumed run restores the draw its checkpoint was made on.
    Bad arguments are one-line :class:`SettingsError`s."""
    labels = torch.as_tensor(labels)
    settings, iterations = check_arguments(settings, iterations, budget_s, frames, labels)
    n_classes = int(n_classes or int(labels.max()) + 1)
    if int(labels.max()) >= n_classes:
        raise SettingsError(f"label {int(labels.max())} is outside 0..{n_classes - 1} (n_classes={n_classes})")
    problem = CS.conv_problem(arch, input_shape, n_classes, cg_tol, cg_max_iterations, spike_solve)
    CS.check_settings(problem, settings)
    check_conv_memory(problem, int(frames.shape[0]), int(frames.shape[1]), settings, str(frames.device), log,
                      frames.dtype if frames.dtype in (torch.uint8, torch.bool) else None)
    dtype = S.DTYPES[settings.dtype]
    X = CS.flat(frames, problem)
    if X.dtype not in (torch.uint8, torch.bool):
        X = X.to(dtype)
    if val is not None:
        val = (CS.flat(val[0], problem), torch.as_tensor(val[1]))
    lab = labels.to(torch.long)
    y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
    generator = torch.Generator().manual_seed(settings.seed)
    cache = S.SolverCache()
    if (resume or checkpoint_every) and out is None:
        raise SettingsError("checkpoints and resume need an output folder (out=..., --out DIR)")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise SettingsError(f"checkpoint_every={checkpoint_every!r} must be an integer >= 0")
    data_fp = f"{fingerprint(X, lab)}+arch={str(arch).strip() if isinstance(arch, str) else arch}"
    if resample is not None:
        if not settings.reproject:
            raise SettingsError("data augmentation (resample) needs re-projection (reproject >= 1)")
        data_fp = f"{data_fp}+{getattr(resample, 'key', 'resample')}"
        X = X.clone()  # replaced in place at every redraw; the caller's frames stay as they are

    def draw(k: int) -> None:
        X.copy_(_draw(resample, k, X))
    t0 = time.perf_counter()
    if resume:
        r = load_checkpoint(Path(out), settings, problem.sizes, data_fp, X.device,
                            weight_shapes=[L.weight_shape for L in problem.net], steps_samples=X.shape[:2])
        generator.set_state(r.generator_state)
        state, best, best_it, history, best_score = r.state, r.best, r.best_iteration, r.history, r.best_score
        compute = r.compute_s
        last_draw = state.iteration - state.iteration % settings.reproject if resample is not None else 0
        if last_draw:  # the frames the checkpointed states were projected on
            draw(last_draw)
        if on_resume is not None:
            on_resume(history)
    else:
        state = CS.init_state(X, y, problem, settings, generator, cache)
        history, best, best_score, best_it = [], [w.clone() for w in state.weights], -1.0, 0

    def record(it: int, seconds: float):
        nonlocal best, best_score, best_it
        m = {"iteration": it, "train_accuracy": _accuracy(state.weights, X, lab, problem, settings),
             "firing_rate": [float(a.mean()) for a in state.spikes], "seconds": seconds, "wall_s": compute,
             "cg": {l: list(v) for l, v in problem.cg_log.items()}}
        if val is not None:
            m["val_accuracy"] = _accuracy(state.weights, val[0], val[1], problem, settings)
        score = m.get("val_accuracy", m["train_accuracy"])
        if val is None or score > best_score:
            best, best_score, best_it = [w.clone() for w in state.weights], score, it
        history.append(m)
        if on_record is not None:
            on_record(m)

    def redraw() -> None:  # the frames of this iteration's draw, in place, before its re-projection
        draw(state.iteration + 1)
        S.forget_inputs(cache)

    if not resume:
        compute = time.perf_counter() - t0
        record(0, compute)
    it = state.iteration
    while it < iterations and not (budget_s is not None and compute >= budget_s):
        it += 1
        t0 = time.perf_counter()
        CS.iterate(state, X, y, problem, settings, cache, generator, redraw=redraw if resample is not None else None)
        step = time.perf_counter() - t0
        compute += step
        record(it, step)
        last = it == iterations or (budget_s is not None and compute >= budget_s)
        if checkpoint_every and (it % checkpoint_every == 0 or last):
            save_checkpoint(Path(out), state, best, best_it, history, generator, settings, problem.sizes, data_fp,
                            best_score, compute, compute)
    status = "budget" if it < iterations else "finished"
    return ConvFitResult([w.detach().clone() for w in state.weights], best, history, state, problem,
                         best_iteration=best_it, iterations=it, status=status, compute_s=compute)


def train_conv(frames: torch.Tensor, labels: torch.Tensor, arch: str, input_shape, settings: ADMMSettings,
               out: str | Path, *, n_classes: int | None = None, val: tuple | None = None,
               budget_s: float | None = None, model_extra: dict | None = None, on_record=None,
               cg_tol: float = 1e-4, cg_max_iterations: int = 100, spike_solve: str = "auto", log=None,
               checkpoint_every: int = 0,
               resume: bool = False, resample=None) -> ConvFitResult:
    """:func:`fit_conv` for ``settings.iterations`` iterations, writing the run into the folder ``out``
    as :func:`train.train` does for dense networks: ``metrics.jsonl`` (one line per history entry,
    iteration 0, the start, included, appended as it is made), ``model.safetensors`` (the best-validation
    weights, with ``arch`` and ``input_shape``: :func:`io.save_model`) and ``summary.json`` (iterations,
    best iteration, times, status, unit counts, architecture, settings, the last history entry and
    ``model_extra``), each written atomically. ``arch`` is the architecture string; ``log`` prints the
    memory estimate; ``checkpoint_every``, ``resume`` and ``resample`` as in :func:`fit_conv` (on resume the
    metrics file is rewritten to the restored history before the run goes on)."""
    if not isinstance(arch, str):
        raise SettingsError(f"arch must be an architecture string such as '12c5-p2-128', not {type(arch).__name__}")
    labels = torch.as_tensor(labels)
    if labels.numel():  # settings the conv solver does not implement fail before the folder is made
        k = int(n_classes or int(labels.max()) + 1)
        CS.check_settings(CS.conv_problem(arch, input_shape, k, cg_tol, cg_max_iterations, spike_solve), settings)
    out = Path(out)
    if resume:
        require_checkpoint(out)
    _prepare_out(out)
    if not resume:
        atomic_write_text(out / "metrics.jsonl", "")

    def record(m: dict) -> None:
        _append_metrics(out, m, "free disk space or choose another --out")
        if on_record is not None:
            on_record(m)

    t0 = time.perf_counter()
    result = fit_conv(frames, labels, arch, input_shape, settings, n_classes=n_classes, val=val, cg_tol=cg_tol,
                      cg_max_iterations=cg_max_iterations, spike_solve=spike_solve, budget_s=budget_s,
                      on_record=record, log=log,
                      out=out, checkpoint_every=checkpoint_every, resume=resume,
                      on_resume=lambda history: _write_metrics(out, history), resample=resample)
    result.wall_s = time.perf_counter() - t0
    write_run(out, result, arch, settings, model_extra)
    return result


def write_run(out: Path, result: ConvFitResult, arch: str, settings: ADMMSettings,
              model_extra: dict | None = None) -> None:
    """The files of a finished conv run in ``out``, each written atomically: ``model.safetensors`` (the
    best-validation weights, with ``arch`` and the input shape, :func:`io.save_model`; its extra record the
    settings, the best iteration and ``model_extra``) and ``summary.json`` (iterations, best iteration,
    ``result.wall_s``, compute, status, unit counts, architecture, input shape, settings, the last history
    entry and ``model_extra``). Shared by :func:`train_conv` and the data-parallel trainer's rank 0."""
    extra = {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **(model_extra or {})}
    input_shape = list(result.problem.input_shape)
    save_model(out / "model.safetensors", result.best_weights, settings.delta, settings.theta, extra,
               arch=arch, input_shape=input_shape)
    summary = {"iterations": result.iterations, "best_iteration": result.best_iteration, "wall_s": result.wall_s,
               "compute_s": result.compute_s, "status": result.status, "sizes": result.problem.sizes,
               "arch": arch.strip(), "input_shape": input_shape, "settings": settings.to_dict(),
               "final": result.history[-1] if result.history else None, **(model_extra or {})}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
