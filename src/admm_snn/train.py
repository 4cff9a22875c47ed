"""The training loop: metrics every iteration, live progress, checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .admm import solver as S
from .admm.lagrangian import lagrangian_terms, residuals
from .admm.settings import ADMMSettings
from .admm.state import ADMMState
from .errors import CheckpointError, SettingsError
from .io import CHECKPOINT_FORMAT, FORMAT_VERSION, atomic_save, fingerprint, read_safetensors, save_model
from .network import LIFParams, forward
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


def accuracy_and_rates(weights, frames, labels, params: LIFParams, chunk: int = 2048):
    """Accuracy of the true forward simulation and the firing rate of each hidden layer."""
    correct, rates, n = 0, None, frames.shape[1]
    for s in range(0, n, chunk):
        trace = forward(weights, frames[:, s:s + chunk], params)
        correct += int((trace.output[-1].argmax(1) == labels[s:s + chunk]).sum())
        r = [float(a.sum()) for a in trace.spikes]
        rates = r if rates is None else [x + y for x, y in zip(rates, r)]
    denom = frames.shape[0] * max(n, 1)
    return correct / max(n, 1), [x / (denom * w.shape[0]) for x, w in zip(rates or [], weights[:-1])]


def spike_gap(state: ADMMState, frames, params: LIFParams) -> list[float]:
    """Fraction of hidden (t, sample, neuron) where the forward simulation's spike differs from round(a)."""
    trace = forward(state.weights, frames, params)
    return [float((fa != a.round()).float().mean()) for fa, a in zip(trace.spikes, state.spikes)]


def iteration_metrics(state, frames, y, labels, settings, val=None) -> dict:
    """The per-iteration report: Lagrangian, loss, residuals, forward accuracies, rates, spike gap."""
    p = settings.lif
    terms = lagrangian_terms(state, frames, y, settings.rho, settings.beta, p, settings.output_rho)
    res = residuals(state, frames, p)
    n = frames.shape[1]
    train_acc, rates = accuracy_and_rates(state.weights, frames, labels, p)
    m = {"iteration": state.iteration, "lagrangian": terms["lagrangian"], "loss": terms["loss"] / n,
         "residual_output": res["output"], "residual_dynamics": res["dynamics"], "residual_spike": res["spike"],
         "spike_gap": spike_gap(state, frames, p), "train_accuracy": train_acc, "firing_rate": rates}
    if val is not None:
        m["val_accuracy"], _ = accuracy_and_rates(state.weights, val[0], val[1], p)
    return m


def _checkpoint_tensors(state: ADMMState, best: list[torch.Tensor], generator: torch.Generator) -> dict:
    t = {"dual": state.dual, "generator": generator.get_state()}
    for i, w in enumerate(state.weights):
        t[f"weights.{i}"] = w
        t[f"best.{i}"] = best[i]
    for i, z in enumerate(state.potentials):
        t[f"potentials.{i}"] = z
    for i, a in enumerate(state.spikes):
        t[f"spikes.{i}"] = a
    return t


def save_checkpoint(out: Path, state, best, best_iteration, history, generator, settings, sizes, data_fp) -> None:
    """Atomically write the full training state to ``out/checkpoint.safetensors``."""
    meta = {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, "iteration": str(state.iteration),
            "settings": json.dumps(settings.to_dict(), sort_keys=True), "sizes": json.dumps(sizes),
            "data": data_fp, "best_iteration": str(best_iteration), "history": json.dumps(history)}
    atomic_save(_checkpoint_tensors(state, best, generator), meta, out / CHECKPOINT)


def load_checkpoint(out: Path, settings: ADMMSettings, sizes, data_fp, device):
    """Read ``out/checkpoint.safetensors`` and check it belongs to this run (same settings apart from the
    iteration count, same network, same data). Returns (state, best, best_iteration, history, gen_state)."""
    path = Path(out) / CHECKPOINT
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT)
    try:
        saved = json.loads(meta["settings"])
        it, hist = int(meta["iteration"]), json.loads(meta["history"])
        saved_sizes, best_it = json.loads(meta["sizes"]), int(meta["best_iteration"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} has a damaged header (field {exc}); delete it to start afresh") from None
    now = settings.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k != "iterations" and saved.get(k) != now.get(k))
    if diff:
        k = diff[0]
        raise CheckpointError(f"{path} was written with {k}={saved.get(k)!r} but this run has {k}={now.get(k)!r}; "
                              "resume with the same settings or use a new --out")
    if saved_sizes != list(sizes):
        raise CheckpointError(f"{path} is for a network {saved_sizes}, this run is {list(sizes)}")
    if meta.get("data") != data_fp:
        raise CheckpointError(f"{path} was trained on other data (fingerprint {meta.get('data')} != {data_fp}); "
                              "resume with the same dataset options")
    L = len(sizes) - 1
    try:
        dev = lambda k: tensors[k].to(device)
        state = ADMMState([dev(f"weights.{i}") for i in range(L)], [dev(f"potentials.{i}") for i in range(L)],
                          [dev(f"spikes.{i}") for i in range(L - 1)], dev("dual"), it)
        best = [dev(f"best.{i}") for i in range(L)]
        gen_state = tensors["generator"]
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks tensor {exc}; it is incomplete") from None
    return state, best, best_it, hist, gen_state


def _write_metrics(out: Path, history: list[dict]) -> None:
    tmp = out / ".metrics.jsonl.tmp"
    with open(tmp, "w") as fh:
        for m in history:
            fh.write(json.dumps(m) + "\n")
    os.replace(tmp, out / "metrics.jsonl")


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
    ``checkpoint_every`` iterations (and at the end), ``model.safetensors`` and ``summary.json``.
    ``resume`` continues from ``out``'s checkpoint and gives bitwise the weights of an uninterrupted run.
    """
    if frames.dim() != 3:
        raise SettingsError(f"frames have shape {tuple(frames.shape)}; expected (T, N, inputs)")
    if labels.shape != (frames.shape[1],):
        raise SettingsError(f"labels have shape {tuple(labels.shape)}; expected ({frames.shape[1]},)")
    if any(h < 1 for h in hidden):
        raise SettingsError(f"hidden sizes {list(hidden)} must all be >= 1")
    if checkpoint_every < 0 or metrics_every < 1:
        raise SettingsError("checkpoint_every must be >= 0 and metrics_every >= 1")
    dtype = S.DTYPES[settings.dtype]
    n_classes = int(n_classes or int(labels.max()) + 1)
    sizes = [frames.shape[2], *hidden, n_classes]
    check_memory(sizes, frames.shape[0], frames.shape[1], settings, device, log=log if progress else None)
    data_fp = fingerprint(frames, labels)
    X = frames.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(X).all()):
        raise SettingsError("frames contain NaN or infinite values; check the input data")
    lab = labels.to(device)
    y = torch.nn.functional.one_hot(lab, n_classes).to(dtype)
    if val is not None:
        val = (val[0].to(device=device, dtype=dtype), val[1].to(device))
    generator = torch.Generator().manual_seed(settings.seed)
    out = Path(out) if out is not None else None
    if resume:
        if out is None:
            raise SettingsError("resume needs an output folder (--out / --resume DIR)")
        state, best, best_it, history, gen_state = load_checkpoint(out, settings, sizes, data_fp, device)
        generator.set_state(gen_state)
        best_score = max([h.get("val_accuracy", -1.0) for h in history if h["iteration"] == best_it] or [-1.0])
    else:
        state = S.init_state(X, y, sizes, settings, generator)
        best, best_it, history, best_score = [w.clone() for w in state.weights], 0, [], -1.0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_metrics(out, history)
    cache = S.SolverCache()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=settings.iterations, initial=state.iteration, desc="admm", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        while state.iteration < settings.iterations:
            t0 = time.perf_counter()
            S.iterate(state, X, y, settings, cache, generator)
            step_s = time.perf_counter() - t0
            last = state.iteration == settings.iterations
            if state.iteration % metrics_every == 0 or last:
                m = iteration_metrics(state, X, y, lab, settings, val)
                m["seconds"] = step_s
                m["wall_s"] = (history[-1]["wall_s"] if history else 0.0) + step_s
                history.append(m)
                score = m.get("val_accuracy", m["train_accuracy"] if val is None else -1.0)
                if val is None or score > best_score:
                    best, best_it, best_score = [w.clone() for w in state.weights], state.iteration, score
                if out is not None:
                    with open(out / "metrics.jsonl", "a") as fh:
                        fh.write(json.dumps(m) + "\n")
                if bar is not None:
                    bar.set_postfix(_postfix(m), refresh=False)
            if bar is not None:
                bar.update(1)
            if out is not None and checkpoint_every and (state.iteration % checkpoint_every == 0 or last):
                save_checkpoint(out, state, best, best_it, history, generator, settings, sizes, data_fp)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    weights = best if val is not None else state.weights
    result = TrainResult([w.detach().clone() for w in weights], [w.detach().clone() for w in state.weights],
                         best_it if val is not None else state.iteration, history, state.iteration, wall,
                         state=state)
    if out is not None:
        save_model(out / "model.safetensors", result.weights, settings.delta, settings.theta,
                   {"settings": settings.to_dict(), "best_iteration": result.best_iteration, **(model_extra or {})})
        summary = {"iterations": state.iteration, "best_iteration": result.best_iteration, "wall_s": wall,
                   "sizes": sizes, "settings": settings.to_dict(), "final": history[-1] if history else None,
                   **(model_extra or {})}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
