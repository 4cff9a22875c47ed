"""ADMM against BPTT and a random-feature floor over network depth (``admm-snn compare`` and
``bench/compare.py``).

Three methods, trained on the same train split and selected on the same validation split:

admm   :func:`admm_snn.train.train` with the validation split for model selection (the weights of the
       iteration with the best validation accuracy of the forward simulation).
bptt   :func:`admm_snn.baselines.bptt.train_bptt` (snnTorch, surrogate gradients, Adam) with the
       validation split choosing the epoch (no patience: every epoch is trained, the best is kept).
floor  random hidden weights and a least-squares readout: :func:`admm_snn.admm.solver.init_state` with
       ``init="forward"``, the top-down order and the joint output solve fits exactly that readout (a
       ridge regression of the one-hot labels on the leaky sums of the true forward hidden spikes).
       With the same settings and seed it is the ADMM run's starting point (iteration 0).

Every accuracy is that of the true forward simulation (:func:`admm_snn.network.predict`) of the weights.

Conv rows (``CompareConfig.archs``, ``--arch SPEC``): the same three methods on the convolutional network
SPEC, on the same split, seeds, budget and shift augmentation as the dense rows: ADMM by :func:`admm_snn.conv_train.fit_conv`
(the validation split choosing the iterate), BPTT by :func:`admm_snn.baselines.bptt.train_bptt_conv`, the
floor by ``fit_conv`` with 0 iterations (conv ADMM's iteration 0); accuracies by
:func:`admm_snn.conv_network.accuracy_and_rates`. Their runs carry ``arch`` (and ``depth`` None).

Timing: ``train_s`` is training compute only. For ADMM it is the initialisation (the floor's time, when
the ADMM run starts from the floor, capped by the part of the ADMM call not spent in iterations) plus the
sum of the iteration times, without the per-iteration evaluation; for BPTT it is the sum of the epoch times, without the per-epoch validation. ``time_to_90``
/ ``time_to_95`` is the training time at the first evaluated iteration/epoch whose validation accuracy
reaches 90% / 95% of the validation accuracy of the selected model.

Memory: ``peak_memory_mib`` is the growth of the process's resident set during the call
(:class:`admm_snn.experiments.common.PeakMemory`). BPTT's own figure (``bptt_peak_memory_mib``, ru_maxrss growth) is kept as well.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..admm.settings import ADMMSettings
from ..errors import SettingsError
from ..data.options import DataOptions, load_splits
from ..network import LIFParams
from .common import PeakMemory, environment, evaluate, mean_std, time_to_fraction, write_json

# Reported test accuracy of ADMM training on the full N-MNIST in Perin et al. (arXiv 2505.05527), by
# number of hidden layers.
PAPER_NMNIST = {1: 0.986, 2: 0.954, 3: 0.855, 5: 0.751}
METHODS = ("admm", "bptt", "floor")
METHOD_NAMES = {"admm": "ADMM", "bptt": "BPTT (snnTorch)", "floor": "Random hidden + LS readout",
                "paper": "Paper ADMM (full N-MNIST)"}
FRACTIONS = (0.9, 0.95)


# ------------------------------------------------------------------------------------------- config

@dataclass
class CompareConfig:
    """What ``admm-snn compare`` runs. ``admm`` and ``bptt`` are the settings records; their ``seed`` is
    the first seed (seed i of ``seeds`` uses seed + i)."""

    data: DataOptions
    admm: ADMMSettings
    bptt: object  # BPTTSettings (imported lazily: snntorch is an optional dependency)
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 5])
    seeds: int = 3
    hidden_width: int = 128
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    metrics_every: int = 1
    device: str = "cpu"
    plot_sample: int = 0
    progress: bool = False
    budget_s: float | None = None
    report_samples: int | None = None
    val_samples: int | None = None
    augment_shift: int | None = None
    """Shift augmentation of every row for ADMM and BPTT alike (:class:`admm_snn.data.augment.ShiftResampler` with its
    default 16 groups, seeded by each method's seed): ADMM redraws at every re-projection, BPTT at every
    epoch after the first; 0: off; None: :func:`admm_snn.data.augment.default_shift` of the sensor (1 on
    MNIST and N-MNIST), dense and conv rows (``archs``) alike."""
    arch_loss_steps: int | None = None
    """``loss_steps`` of the conv rows' ADMM (None: ``admm.loss_steps``); the command line sets 1 when
    --loss-steps is left out, since conv rows lost with the loss on 3 steps (docs/results.md)."""
    archs: list[str] = field(default_factory=list)
    """Convolutional architectures (:func:`admm_snn.arch.parse_arch` strings such as ``12c5-p2-32c5-p2-128``),
    one row each next to the dense ``depths`` rows: ADMM by :func:`admm_snn.conv_train.fit_conv`, BPTT by
    :func:`admm_snn.baselines.bptt.train_bptt_conv`, the floor by ``fit_conv`` with 0 iterations."""

    def __post_init__(self):
        self.depths, self.archs = list(self.depths or []), [str(a).strip() for a in (self.archs or [])]
        if not self.depths and not self.archs:
            raise SettingsError("nothing to compare: give depths (dense rows) or architectures (--arch, conv rows)")
        if any((not isinstance(d, int)) or isinstance(d, bool) or d < 1 for d in self.depths):
            raise SettingsError(f"depths {self.depths} must be integers >= 1 (number of hidden layers)")
        from ..arch import parse_arch
        for a in self.archs:
            parse_arch(a)  # a bad string: one line naming the part
        if len(set(self.archs)) != len(self.archs):
            raise SettingsError(f"architectures {self.archs} name one more than once; give each once")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise SettingsError(f"seeds={self.seeds!r} must be an integer >= 1")
        if not isinstance(self.hidden_width, int) or self.hidden_width < 1:
            raise SettingsError(f"hidden width {self.hidden_width!r} must be an integer >= 1")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise SettingsError(f"methods {self.methods} must be a non-empty subset of {', '.join(METHODS)}")
        if not isinstance(self.metrics_every, int) or self.metrics_every < 1:
            raise SettingsError(f"metrics_every={self.metrics_every!r} must be an integer >= 1")
        if self.plot_sample < 0:
            raise SettingsError(f"plot sample {self.plot_sample} must be >= 0")
        if self.budget_s is not None and not (isinstance(self.budget_s, (int, float)) and self.budget_s > 0):
            raise SettingsError(f"budget {self.budget_s!r} must be a number of seconds > 0")
        if self.augment_shift is not None and (not isinstance(self.augment_shift, int) or self.augment_shift < 0):
            raise SettingsError(f"augment shift {self.augment_shift!r} must be 0 (off) or a number of pixels >= 1")
        for name in ("report_samples", "val_samples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise SettingsError(f"{name}={v!r} must be 0 (all) or a positive integer")
        if self.arch_loss_steps is not None:
            self.conv_settings()  # an impossible loss_steps for the conv rows: one line, before any data is read
        if self.archs and self.metrics_every != 1:
            raise SettingsError(f"metrics_every={self.metrics_every} is not supported with conv rows (--arch): "
                                "convolutional ADMM evaluates every iteration; leave it out")

    def conv_settings(self) -> ADMMSettings:
        """The ADMM settings of the conv rows: ``admm`` with ``arch_loss_steps`` where it is set."""
        return self.admm if self.arch_loss_steps is None else self.admm.replace(loss_steps=self.arch_loss_steps)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("depths", "seeds", "hidden_width", "methods", "metrics_every",
                                            "device", "plot_sample", "budget_s", "report_samples", "val_samples",
                                            "augment_shift", "arch_loss_steps", "archs")}
        d.update(data=self.data.to_dict(), admm=self.admm.to_dict(), bptt=asdict(self.bptt))
        return d


def floor_settings(settings: ADMMSettings) -> ADMMSettings:
    """The settings whose ``init_state`` is the floor: forward init, top-down order, joint readout, the
    loss at T alone (the best readout of the random features at the time it is read; with ``loss_steps``
    > 1 the ADMM run starts from a readout fitted at several steps instead, and no longer at the floor)."""
    return settings.replace(init="forward", order="top-down", output_solve="joint", iterations=0, loss_steps=1)


def admm_starts_at_floor(settings: ADMMSettings) -> bool:
    return floor_settings(settings).replace(iterations=settings.iterations) == settings



# ------------------------------------------------------------------------------------------- methods

def run_floor(X, labels, val, test, hidden, settings: ADMMSettings, device="cpu") -> dict:
    from ..admm import solver as S
    fs = floor_settings(settings)
    dtype = S.DTYPES[fs.dtype]
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        compact = X.dtype in (torch.uint8, torch.bool)  # spike frames stay compact, as train() keeps them
        Xd = X.to(device=device) if compact else X.to(device=device, dtype=dtype)
        n_classes = int(max(int(labels.max()), int(val[1].max()), int(test[1].max())) + 1)
        y = torch.nn.functional.one_hot(labels.to(device), n_classes).to(dtype)
        sizes = [int(X.shape[2]), *hidden, n_classes]
        gen = torch.Generator().manual_seed(fs.seed)
        state = S.init_state(Xd, y, sizes, fs, gen, cache=S.SolverCache())
        init_s = time.perf_counter() - t0
        weights = [w.detach().clone() for w in state.weights]
        del state, Xd
    params = settings.lif
    v = evaluate(weights, val[0], val[1], params)
    te = evaluate(weights, test[0], test[1], params)
    return {"method": "floor", "weights": weights, "train_s": init_s, "wall_s": init_s,
            "val_accuracy": v["accuracy"], "test_accuracy": te["accuracy"], "firing_rate": te["firing_rate"],
            "synaptic_ops": te["synaptic_ops"], "curve": [(init_s, v["accuracy"])],
            "time_to_90": init_s, "time_to_95": init_s, "peak_memory_mib": mem.bytes / 2 ** 20}


def run_admm(X, labels, val, test, hidden, settings: ADMMSettings, floor: dict | None, metrics_every=1,
             device="cpu", progress=False, budget_s=None, report_samples=None, resample=None) -> dict:
    from ..train import train
    n_classes = int(max(int(labels.max()), int(val[1].max()), int(test[1].max())) + 1)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        res = train(X, labels, hidden, settings, n_classes=n_classes, val=val, progress=progress, device=device,
                    metrics_every=metrics_every, log=lambda *a, **k: None, budget_s=budget_s,
                    report_samples=report_samples, val_samples=0, resample=resample)
        wall = time.perf_counter() - t0
    weights = [w.detach().cpu() for w in res.weights]
    # Training time: ADMM's own initialisation (with the default settings the floor's fit) plus its
    # iterations, without the per-iteration report; the budget counts the same.
    starts = floor is not None and admm_starts_at_floor(settings)
    offset = res.init_s
    curve = [(offset, floor["val_accuracy"])] if starts else []
    curve += [(offset + h["wall_s"], h["val_accuracy"]) for h in res.history]
    selected = next((h["val_accuracy"] for h in res.history if h["iteration"] == res.best_iteration), None)
    if selected is None and starts:
        selected = floor["val_accuracy"]
    params = settings.lif
    te = evaluate(weights, test[0], test[1], params)
    keep = ("iteration", "wall_s", "loss", "lagrangian", "residual_output", "residual_dynamics",
            "residual_spike", "spike_gap", "train_accuracy", "val_accuracy", "firing_rate", "report_samples",
            "report_s")
    history = [{k: h.get(k) for k in keep} for h in res.history]
    out = {"method": "admm", "weights": weights, "train_s": res.init_s + res.compute_s, "init_s": res.init_s,
           "wall_s": wall, "best_iteration": res.best_iteration, "iterations": res.iterations,
           "status": res.status, "val_accuracy": selected, "test_accuracy": te["accuracy"],
           "firing_rate": te["firing_rate"], "synaptic_ops": te["synaptic_ops"], "curve": curve,
           "peak_memory_mib": mem.bytes / 2 ** 20, "history": history,
           "report_s": sum(h.get("report_s") or 0.0 for h in res.history), "starts_at_floor": starts}
    for f in FRACTIONS:
        out[f"time_to_{round(f * 100)}"] = time_to_fraction(curve, selected, f) if selected is not None else None
    return out


def run_bptt(X, labels, val, test, hidden, bptt_settings, params: LIFParams, device="cpu", progress=False,
             budget_s=None, resample=None, arch=None, input_shape=None) -> dict:
    """BPTT of the dense network ``hidden`` (:func:`train_bptt`), or, with ``arch`` and ``input_shape``,
    of that convolutional network (:func:`train_bptt_conv`); the same budget, epochs and selection."""
    from ..baselines.bptt import train_bptt, train_bptt_conv
    n_classes = _n_classes(labels, val, test)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if arch is None:
            res = train_bptt(X, labels, hidden, params, bptt_settings, val[0], val[1], device=device,
                             progress=progress, n_classes=n_classes, budget_s=budget_s, resample=resample)
        else:
            res = train_bptt_conv(X, labels, arch, input_shape, params, bptt_settings, val[0], val[1],
                                  device=device, progress=progress, n_classes=n_classes, budget_s=budget_s,
                                  resample=resample)
        wall = time.perf_counter() - t0
    weights = [w.detach().cpu() for w in res.weights]
    curve = [(h["wall_s"], h["val_acc"]) for h in res.history]
    selected = max(h["val_acc"] for h in res.history)
    te = (evaluate(weights, test[0], test[1], params) if arch is None
          else evaluate_conv(arch, input_shape, weights, test[0], test[1], params))
    n, bs = X.shape[1], bptt_settings.batch_size
    epochs = sum(min(1.0, h["batches"] * bs / n) if h.get("partial") else 1.0 for h in res.history)
    stopped = len(res.history) < bptt_settings.epochs or bool(res.history[-1].get("partial"))
    out = {"method": "bptt", "weights": weights, "train_s": res.history[-1]["wall_s"], "wall_s": wall,
           "best_epoch": res.best_epoch, "epochs": epochs, "status": "budget" if stopped else "finished",
           "val_accuracy": selected,
           "test_accuracy": te["accuracy"], "firing_rate": te["firing_rate"], "synaptic_ops": te["synaptic_ops"],
           "curve": curve, "peak_memory_mib": mem.bytes / 2 ** 20,
           "bptt_peak_memory_mib": res.peak_memory_bytes / 2 ** 20,
           "history": [{k: h.get(k) for k in ("epoch", "wall_s", "train_loss", "train_acc", "val_acc", "partial",
                                              "batches")} for h in res.history]}
    for f in FRACTIONS:
        out[f"time_to_{round(f * 100)}"] = time_to_fraction(curve, selected, f)
    return out


# ------------------------------------------------------------------------------------ conv methods

def _n_classes(labels, val, test) -> int:
    return int(max(int(labels.max()), int(val[1].max()), int(test[1].max())) + 1)


def evaluate_conv(arch, input_shape, weights, frames, labels, params: LIFParams) -> dict:
    """:func:`admm_snn.conv_network.accuracy_and_rates` as :func:`common.evaluate`'s dict; synaptic
    operations are not counted for convolutional networks (None)."""
    from ..conv_network import accuracy_and_rates
    acc, rates = accuracy_and_rates(arch, input_shape, [w.cpu() for w in weights], frames, labels, params)
    return {"accuracy": acc, "firing_rate": rates, "synaptic_ops": None}


def check_conv(arch, input_shape, n_classes: int, settings: ADMMSettings, methods) -> None:
    """One-line :class:`SettingsError` before any training when the network ``arch`` does not fit inputs of
    ``input_shape`` or the conv solver does not implement the settings ADMM (or the floor) would use."""
    from ..admm import conv_solver as CS
    problem = CS.conv_problem(arch, input_shape, n_classes)
    if "admm" in methods:
        CS.check_settings(problem, settings)
    if "floor" in methods:
        CS.check_settings(problem, floor_settings(settings))


def run_floor_conv(X, labels, val, test, arch, input_shape, settings: ADMMSettings, device="cpu") -> dict:
    """The conv floor: :func:`admm_snn.conv_train.fit_conv` with :func:`floor_settings` and 0 iterations
    (random kernels and matrices, rate calibration when ``init_rate`` is set, a least-squares readout of the
    forward hidden spikes): with the same settings and seed, conv ADMM's iteration 0."""
    from ..conv_train import fit_conv
    fs = floor_settings(settings)
    with PeakMemory() as mem:
        res = fit_conv(X.to(device), labels.to(device), arch, input_shape, fs, 0,
                       n_classes=_n_classes(labels, val, test))
        init_s = res.compute_s
        weights = [w.detach().cpu() for w in res.weights]
        del res
    params = settings.lif
    v = evaluate_conv(arch, input_shape, weights, val[0], val[1], params)
    te = evaluate_conv(arch, input_shape, weights, test[0], test[1], params)
    return {"method": "floor", "weights": weights, "train_s": init_s, "wall_s": init_s,
            "val_accuracy": v["accuracy"], "test_accuracy": te["accuracy"], "firing_rate": te["firing_rate"],
            "synaptic_ops": None, "curve": [(init_s, v["accuracy"])],
            "time_to_90": init_s, "time_to_95": init_s, "peak_memory_mib": mem.bytes / 2 ** 20}


def run_admm_conv(X, labels, val, test, arch, input_shape, settings: ADMMSettings, device="cpu",
                  budget_s=None, resample=None) -> dict:
    """Conv ADMM: :func:`admm_snn.conv_train.fit_conv` for at most ``settings.iterations`` iterations within
    ``budget_s``, the validation split choosing the iterate (iteration 0, the start, included), with the
    shift augmentation ``resample`` (None: none). ``train_s``: initialisation plus iterations, without the
    per-iteration evaluation."""
    from ..conv_train import fit_conv
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        res = fit_conv(X.to(device), labels.to(device), arch, input_shape, settings,
                       n_classes=_n_classes(labels, val, test), val=(val[0].to(device), val[1].to(device)),
                       budget_s=budget_s, resample=resample)
        wall = time.perf_counter() - t0
        weights = [w.detach().cpu() for w in res.best_weights]
        history = [{k: h.get(k) for k in ("iteration", "wall_s", "seconds", "train_accuracy", "val_accuracy",
                                          "firing_rate")} for h in res.history]
        init_s, compute_s = res.history[0]["wall_s"], res.compute_s
        best_it, its, status = res.best_iteration, res.iterations, res.status
        del res
    curve = [(h["wall_s"], h["val_accuracy"]) for h in history]
    selected = next(h["val_accuracy"] for h in history if h["iteration"] == best_it)
    te = evaluate_conv(arch, input_shape, weights, test[0], test[1], settings.lif)
    out = {"method": "admm", "weights": weights, "train_s": compute_s, "init_s": init_s, "wall_s": wall,
           "best_iteration": best_it, "iterations": its, "status": status, "val_accuracy": selected,
           "test_accuracy": te["accuracy"], "firing_rate": te["firing_rate"], "synaptic_ops": None,
           "curve": curve, "peak_memory_mib": mem.bytes / 2 ** 20, "history": history,
           "starts_at_floor": admm_starts_at_floor(settings)}
    for f in FRACTIONS:
        out[f"time_to_{round(f * 100)}"] = time_to_fraction(curve, selected, f)
    return out


def accuracy_at(curve: list, t: float) -> float | None:
    """The best validation accuracy of ``curve`` [(seconds, accuracy)] reached within ``t`` seconds of
    training (the model a run stopped at ``t`` would return); None before the first point."""
    accs = [a for s, a in curve if s <= t + 1e-9]
    return max(accs) if accs else None


# ------------------------------------------------------------------------------------------- summary

SUMMARY_FIELDS = ("test_accuracy", "val_accuracy", "train_s", "wall_s", "time_to_90", "time_to_95",
                  "peak_memory_mib", "synaptic_ops", "iterations", "epochs")
#: fractions of the time axis at which the accuracy-against-time table reads every curve
TIME_POINTS = (0.25, 0.5, 1.0)


def time_axis(runs: list[dict], budget_s: float | None) -> float:
    """The time the accuracy-against-time table spans: the budget, else the longest training time."""
    if budget_s:
        return float(budget_s)
    return max((r["train_s"] for r in runs), default=0.0)


def row_key(r: dict):
    """A run's or summary row's row of the tables: its architecture string (conv rows) or its depth."""
    return r.get("arch") or r["depth"]


def row_label(key) -> str:
    return f"{key} (conv)" if isinstance(key, str) else str(key)


def summarise(runs: list[dict], depths, methods, budget_s: float | None = None, archs=()) -> list[dict]:
    """Mean and sample standard deviation (n − 1) over seeds, per method and row (each depth, then each
    conv architecture of ``archs``); ``val_at`` holds the validation accuracy reached within each of
    :data:`TIME_POINTS` × :func:`time_axis` seconds."""
    horizon = time_axis(runs, budget_s)
    rows = []
    for key in [*depths, *archs]:
        for m in methods:
            rs = [r for r in runs if r["method"] == m and row_key(r) == key]
            if not rs:
                continue
            row = {"method": m, "depth": rs[0]["depth"], "arch": rs[0].get("arch"), "seeds": len(rs)}
            for k in SUMMARY_FIELDS:
                row[k] = mean_std([r.get(k) for r in rs])
            n_layers = len(rs[0]["firing_rate"])
            row["firing_rate"] = [mean_std([r["firing_rate"][i] for r in rs]) for i in range(n_layers)]
            row["val_at"] = {f"{f:g}": mean_std([accuracy_at(r["curve"], f * horizon) for r in rs])
                             for f in TIME_POINTS}
            row["time_axis_s"] = horizon
            rows.append(row)
    return rows


def _pct(ms: dict | None, digits: int = 1) -> str:
    if ms is None:
        return "–"
    if ms["n"] > 1:
        return f"{100 * ms['mean']:.{digits}f} ± {100 * ms['std']:.{digits}f}"
    return f"{100 * ms['mean']:.{digits}f}"


def _num(ms: dict | None, fmt: str = ".1f") -> str:
    if ms is None:
        return "–"
    if ms["n"] > 1:
        return f"{ms['mean']:{fmt}} ± {ms['std']:{fmt}}"
    return f"{ms['mean']:{fmt}}"


def _settings_lines(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def results_markdown(results: dict) -> str:
    cfg, split, summary = results["config"], results["split"], results["summary"]
    methods, depths, archs = cfg["methods"], cfg["depths"], cfg.get("archs") or []
    keys = [*depths, *archs]
    data = cfg["data"]
    by = {(r["method"], row_key(r)): r for r in summary}
    n_seeds = cfg["seeds"]
    nmnist = data["dataset"] == "nmnist"
    images = data["dataset"] not in ("nmnist", "digits")
    budget = cfg.get("budget_s")
    unit = "recordings" if nmnist else "samples"
    L = []
    L.append("# ADMM vs BPTT vs random-feature floor on "
             + ("N-MNIST" if nmnist else {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST",
                                          "kmnist": "KMNIST"}.get(data["dataset"], data["dataset"])))
    L.append("")
    L.append(f"Test accuracy (%) of the forward-simulated network, mean ± std over {n_seeds} seed(s); "
             f"{split['n_train']} train / {split['n_val']} validation / {split['n_test']} test {unit} "
             f"(test: {split['test_source']}); "
             + (f"dense rows: hidden layers of {cfg['hidden_width']} LIF neurons" if depths else "")
             + ("; " if depths and archs else "")
             + ("conv rows (conv): the convolutional LIF network of that architecture string, "
                "the same one for every method" if archs else "")
             + (f"; every ADMM and BPTT run had the same training-time budget of {budget:g} s." if budget else "."))
    L.append("")
    head = ["Hidden layers"] + [METHOD_NAMES[m] for m in methods] + ([METHOD_NAMES["paper"]] if nmnist else [])
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "|".join(["---:"] * len(head)) + "|")
    for d in keys:
        cells = [row_label(d)] + [_pct(by[(m, d)]["test_accuracy"]) if (m, d) in by else "–" for m in methods]
        if nmnist:
            cells.append(f"{100 * PAPER_NMNIST[d]:.1f}" if d in PAPER_NMNIST else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    horizon = summary[0]["time_axis_s"] if summary and "time_axis_s" in summary[0] else None
    if horizon:
        L.append(f"Accuracy against training time: validation accuracy (%) of the model each method would return "
                 f"if stopped after t seconds of training (its best evaluated point so far; – = none yet), "
                 + (f"t as fractions of the {budget:g} s budget." if budget
                    else f"t as fractions of the longest run ({horizon:.0f} s).") + " Plot: `accuracy_vs_time.png`.")
        L.append("")
        ts = [f * horizon for f in TIME_POINTS]
        head = ["Method", "Hidden layers"] + [f"t = {t:.3g} s" for t in ts] + ["Train time used (s)",
                                                                               "Iterations / epochs"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|---|---:|" + "---:|" * (len(ts) + 2))
        for d in keys:
            for m in methods:
                r = by.get((m, d))
                if r is None:
                    continue
                steps = {"admm": _num(r.get("iterations"), ".0f"), "bptt": _num(r.get("epochs"), ".2f")}.get(m, "–")
                L.append("| " + " | ".join([METHOD_NAMES[m], row_label(d)]
                                           + [_pct(r["val_at"][f"{f:g}"]) for f in TIME_POINTS]
                                           + [_num(r["train_s"]), steps]) + " |")
        L.append("")
    L.append("Cost, mean ± std over seeds (training times on this machine: "
             f"{results['environment'].get('cpu_count')} CPU cores, {results['environment'].get('threads')} torch "
             "threads, shared with other jobs, so absolute times are noisy).")
    L.append("")
    head = ["Method", "Hidden layers", "Val. acc. (%)", "Train time (s)", "To 90% (s)", "To 95% (s)",
            "Peak memory (MiB)", "Firing rate per hidden layer", "SynOps / sample"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for d in keys:
        for m in methods:
            r = by.get((m, d))
            if r is None:
                continue
            rates = " / ".join(f"{x['mean']:.3f}" for x in r["firing_rate"] if x is not None)
            L.append("| " + " | ".join([METHOD_NAMES[m], row_label(d), _pct(r["val_accuracy"]), _num(r["train_s"]),
                                        _num(r["time_to_90"]), _num(r["time_to_95"]),
                                        _num(r["peak_memory_mib"], ".0f"), rates,
                                        _num(r["synaptic_ops"], ",.0f")]) + " |")
    L.append("")
    L.append("## How these numbers were made")
    L.append("")
    adm = cfg["admm"]
    n_all = split['n_train'] + split['n_val'] + (0 if split['test_source'] != f"held-out {data['test_fraction']:.0%} of training" else split['n_test'])
    if nmnist:
        what = f"N-MNIST: {n_all} training recordings in {data['data_dir']}"
    elif images:
        what = f"{data['dataset']}: {n_all} training images (IDX files) in {data['data_dir']}"
    else:
        what = data["dataset"]
    L.append(f"- **Data.** {what}" + (f" (limit {data['limit']})" if data.get("limit") else "")
             + f", split stratified by class with split seed {data['split_seed']} into train/validation/test "
             f"({split['n_train']}/{split['n_val']}/{split['n_test']}; test: {split['test_source']}). "
             + (f"Each recording: denoised ({data['denoise_ms']} ms filter), the first {data['time_steps']} frames of "
                f"{data['bin_ms']} ms ({data['time_steps'] * data['bin_ms']:.0f} ms of the ~300 ms recording), "
                "2·34·34 = 2312 binary inputs." if nmnist else
                f"{data['time_steps']} time steps, {data['encoding']} code (seed {data['split_seed']})."))
    if cfg.get("val_samples") and split["n_val"] > cfg["val_samples"]:
        L.append(f"- **Validation** (model selection, all methods): a fixed subsample of {cfg['val_samples']} of the "
                 f"{split['n_val']} validation {unit}.")
    if nmnist:
        L.append("- **Differences from the paper's setup.** The paper's figures (last column) are quoted, not reproduced: "
                 "they are for the full N-MNIST (60,000 training and 10,000 test recordings) with 1 ms frames, the "
                 "paper's initialisation (W = 0, z and a uniform) and its sequential update order. Here: "
                 f"{split['n_train']} training recordings ({100 * split['n_train'] / 60000:.2g}% of 60,000), {data['bin_ms']} ms frames, "
                 f"T = {data['time_steps']}, and this implementation's ADMM settings (below), which differ from the "
                 "paper's where the spec found the paper's choices to train poorly. The numbers are therefore "
                 "comparable with each other (same split, same network, same evaluation), not with the paper's.")
    from ..baselines.bptt import BPTTSettings
    lib_it, lib_ep = ADMMSettings().iterations, BPTTSettings().epochs
    if budget:
        used = {m: [r["train_s"] for r in results["runs"] if r["method"] == m] for m in ("admm", "bptt")}
        parts = [f"{METHOD_NAMES[m]} used {min(v):.1f}–{max(v):.1f} s" for m, v in used.items() if v]
        L.append(f"- **Budget.** {budget:g} s of training time per run and method (wall clock, one process, "
                 f"{results['environment'].get('threads')} torch thread(s)): ADMM stops its iterations, BPTT its "
                 f"mini-batches, after the step during which the budget ran out (caps: {adm['iterations']} ADMM "
                 f"iterations, {cfg['bptt']['epochs']} BPTT epochs). Time actually used: " + "; ".join(parts) + ".")
    elif adm["iterations"] < lib_it or cfg["bptt"]["epochs"] < lib_ep:
        L.append(f"- **Budget.** ADMM {adm['iterations']} iterations and BPTT {cfg['bptt']['epochs']} epochs (library "
                 f"defaults: {lib_it} and {lib_ep}), chosen so that the whole comparison fits in 30 minutes on this "
                 "machine; methods still improving at the end are under-trained (see `accuracy_vs_time.png`).")
    if cfg.get("augment_shift"):
        L.append(f"- **Augmentation{' of every row' if archs else ''}.** Both methods train on shifted frames: the training samples move by new "
                 f"random offsets in [−{cfg['augment_shift']}, {cfg['augment_shift']}]² pixels (zero fill; 16 fixed "
                 "random groups of samples, one offset per group and draw) at every ADMM re-projection and every BPTT "
                 "epoch after the first; validation and test frames are not moved (`--augment-shift 0`: none).")
    else:
        L.append(f"- **Augmentation{' of every row' if archs else ''}.** None (`--augment-shift 0`): both "
                 "methods train on the fixed frames.")
    if archs:
        L.append("- **Conv rows** (" + ", ".join(f"`{a}`" for a in archs) + "): the same split, validation subsample, "
                 "seeds" + (", budget" if budget else "") + ", iteration/epoch caps and augmentation as the dense rows. ADMM: "
                 "`admm_snn.conv_train.fit_conv` (the conv ADMM solver, the same settings as the dense rows"
                 + (f" but loss_steps {cfg['arch_loss_steps']}" if cfg.get("arch_loss_steps") not in (None, adm.get("loss_steps"))
                    else "") + "), the "
                 "validation split choosing the iterate (iteration 0, the start, included; evaluated every "
                 "iteration). BPTT: `admm_snn.baselines.bptt.train_bptt_conv` with the same architecture and BPTT "
                 "settings. Floor: `fit_conv` with 0 iterations and the floor's settings (random kernels and "
                 "matrices, a ridge least-squares readout of the forward hidden spikes)"
                 + (", which is conv ADMM's iteration 0" if results.get("conv_admm_starts_at_floor") else "")
                 + ". Accuracy and firing rates: the forward simulation of `admm_snn.conv_network`; a conv row's "
                 "firing rates are per hidden LIF layer (convolutions and dense layers, pooling is not a layer); "
                 "synaptic operations are not counted for conv rows (–).")
    L.append(f"- **ADMM.** `admm_snn.train.train`, "
             + (f"at most {adm['iterations']} iterations within the budget" if budget else f"{adm['iterations']} iterations")
             + f", validation accuracy evaluated every {cfg['metrics_every']} iteration(s) and the best iteration "
             f"kept. Settings: {_settings_lines(adm)}; seed i uses seed + i.")
    bp = cfg["bptt"]
    L.append(f"- **BPTT.** `admm_snn.baselines.bptt.train_bptt` (snnTorch Leaky neurons with the same dynamics, "
             f"fast-sigmoid surrogate, Adam, cross-entropy on the last output potential), "
             + (f"at most {bp['epochs']} epochs within the budget (the last one partial)" if budget else f"{bp['epochs']} epochs")
             + f", the epoch with the best validation accuracy kept (no early stop). Settings: {_settings_lines(bp)}.")
    L.append("- **Floor.** Random hidden weights (the ADMM initialisation: Gaussian, gain "
             f"{adm['init_gain']}/√fan-in) and a ridge least-squares readout on the leaky sums of the true hidden "
             "spikes (`init_state` with init=forward, the joint output solve). "
             + ("With deep_init=identity the hidden layers after the first start as exact copies of the first, "
                "so the deep networks' floor is the one-layer floor. "
                if adm.get("deep_init") == "identity" else "")
             + ("With these settings it is exactly ADMM's iteration 0, and ADMM's times include it."
                if results.get("admm_starts_at_floor") else "ADMM does not start from it with these settings."))
    L.append("- **Accuracy** is always that of the exact forward simulation (`admm_snn.network.predict`, binary "
             "spikes, strict threshold) of the selected weights on the test split; std is the sample standard "
             "deviation over seeds (n − 1).")
    L.append("- **Train time** is training compute only: ADMM initialisation plus iteration times (without "
             "the per-iteration report), BPTT epoch times (without validation). **To 90% / 95%**: training "
             "time at the first evaluated iteration/epoch reaching 90% / 95% of the selected model's validation "
             "accuracy.")
    L.append("- **Peak memory**: growth of the process's resident set during the training call, sampled every "
             "5 ms (heap trimmed before each run). It includes the per-sample ADMM state (potentials, spikes) "
             "and, for ADMM, the per-iteration evaluation.")
    L.append("- **Firing rate**: spikes per neuron per time step of each hidden layer on the test split. "
             "**SynOps / sample**: Σ_l (input events to layer l) × n_l, i.e. one synaptic operation per "
             "(event, target neuron), on the test split.")
    env = results["environment"]
    if env.get("git_commit"):
        dirty = env.get("git_dirty_files") or []
        L.append(f"- **Code**: commit {env['git_commit'][:10]} ({env.get('git_subject')})"
                 + (f"; uncommitted changes in {', '.join(dirty)}" if dirty else "") + ".")
    L.append(f"- **Run time** of the whole comparison: {results.get('total_s', 0) / 60:.1f} min.")
    L.append("")
    if results.get("plots"):
        L.append("Plots: " + ", ".join(f"`{name}`" for name in results["plots"]) + ".")
    L.append("")
    return "\n".join(L)



# ------------------------------------------------------------------------------------------- compare

def _time_major(ds) -> torch.Tensor:
    return ds.time_major(dtype=ds.frames.dtype)


def _resampler(X, sensor_shape, shift: int, seed: int):
    """The shift augmentation of one run (None when off)."""
    if not shift:
        return None
    from ..data.augment import ShiftResampler
    return ShiftResampler(X, sensor_shape, shift, seed)


def run_compare(config: CompareConfig, out: str | Path, log=print) -> dict:
    """Run every method for every depth and seed; write results.json, results.md and the plots to ``out``.
    results.json is rewritten after every run (``"complete": false`` until the end)."""
    # Import everything the run will use now, so that edits to the source tree during a long run
    # cannot mix code versions (the commit recorded in results.json is the one loaded here).
    from .. import io, train  # noqa: F401
    from . import plots
    if "bptt" in config.methods:
        from ..baselines import bptt  # noqa: F401
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    splits = load_splits(config.data)
    if splits.val is None or splits.test is None:
        raise SettingsError("compare needs a validation and a test split: use --val-fraction > 0 and "
                            "--test-fraction > 0 (or a data folder with a Test set)")
    # frames keep their dtype (uint8 spikes stay compact, as admm-snn train keeps them); every method
    # converts one chunk or mini-batch at a time
    X, labels = _time_major(splits.train), splits.train.labels
    sensor_shape = splits.train.sensor_shape
    from ..data.augment import default_shift
    shift = default_shift(sensor_shape) if config.augment_shift is None else config.augment_shift
    val = (_time_major(splits.val), splits.val.labels)
    test = (_time_major(splits.test), splits.test.labels)
    info = splits.info
    del splits  # the sample-major copies: only the time-major ones are used from here
    from ..train import VAL_SAMPLES, VAL_SEED, report_indices
    vidx = report_indices(val[0].shape[1], VAL_SAMPLES if config.val_samples is None else config.val_samples,
                          VAL_SEED)
    if vidx is not None:  # one bounded validation subsample that selects the model of every method
        val = (val[0][:, vidx], val[1][vidx])
    log(f"data: {info['n_train']} train, {info['n_val']} val, {info['n_test']} test "
        f"({info['test_source']}), T={X.shape[0]}, {X.shape[2]} inputs; loaded in "
        f"{time.perf_counter() - t_start:.1f} s")
    n_classes = _n_classes(labels, val, test)
    for a in config.archs:  # a network that does not fit, or settings conv ADMM lacks: one line, before training
        check_conv(a, sensor_shape, n_classes, config.conv_settings(), config.methods)
    params = config.admm.lif
    results = {"config": {**config.to_dict(), "augment_shift": shift}, "split": info, "environment": environment(),
               "paper": {str(k): v for k, v in PAPER_NMNIST.items()} if config.data.dataset == "nmnist" else {},
               "runs": [], "summary": [],
               "admm_starts_at_floor": admm_starts_at_floor(config.admm),
               "conv_admm_starts_at_floor": admm_starts_at_floor(config.conv_settings()), "complete": False}
    best = None  # (val accuracy, weights, depth, seed) of the best ADMM run
    total = (len(config.depths) + len(config.archs)) * config.seeds * len(config.methods)
    k = 0
    for depth in config.depths:
        hidden = [config.hidden_width] * depth
        for i in range(config.seeds):
            seed = config.admm.seed + i
            admm_s = config.admm.replace(seed=seed)
            floor = None
            if "floor" in config.methods or "admm" in config.methods:
                floor = run_floor(X, labels, val, test, hidden, admm_s, config.device)
            for m in config.methods:
                t0 = time.perf_counter()
                if m == "floor":
                    r = floor
                elif m == "admm":
                    r = run_admm(X, labels, val, test, hidden, admm_s, floor, config.metrics_every,
                                 config.device, config.progress, config.budget_s, config.report_samples,
                                 _resampler(X, sensor_shape, shift, seed))
                else:
                    bs = config.bptt.__class__(**{**asdict(config.bptt), "seed": config.bptt.seed + i})
                    r = run_bptt(X, labels, val, test, hidden, bs, params, config.device, config.progress,
                                 config.budget_s, _resampler(X, sensor_shape, shift, bs.seed))
                weights = r.pop("weights")
                if m == "admm" and r["val_accuracy"] is not None and (best is None or r["val_accuracy"] > best[0]):
                    best = (r["val_accuracy"], weights, depth, seed)
                r.update(depth=depth, arch=None, seed=i)
                k = _record(results, r, k, total, t0, t_start, out, log)
    best_conv = None  # (val accuracy, weights, arch, seed) of the best conv ADMM run
    for arch in config.archs:
        for i in range(config.seeds):
            seed = config.admm.seed + i
            admm_s = config.conv_settings().replace(seed=seed)
            for m in config.methods:
                t0 = time.perf_counter()
                if m == "floor":
                    r = run_floor_conv(X, labels, val, test, arch, sensor_shape, admm_s, config.device)
                elif m == "admm":
                    r = run_admm_conv(X, labels, val, test, arch, sensor_shape, admm_s, config.device,
                                      config.budget_s, _resampler(X, sensor_shape, shift, seed))
                else:
                    bs = config.bptt.__class__(**{**asdict(config.bptt), "seed": config.bptt.seed + i})
                    r = run_bptt(X, labels, val, test, None, bs, params, config.device, config.progress,
                                 config.budget_s, _resampler(X, sensor_shape, shift, bs.seed), arch=arch,
                                 input_shape=sensor_shape)
                weights = r.pop("weights")
                if m == "admm" and (best_conv is None or r["val_accuracy"] > best_conv[0]):
                    best_conv = (r["val_accuracy"], weights, arch, seed)
                r.update(depth=None, arch=arch, seed=i)
                k = _record(results, r, k, total, t0, t_start, out, log)
    results["summary"] = summarise(results["runs"], config.depths, config.methods, config.budget_s, config.archs)
    files = []
    if config.depths:
        files.append(plots.accuracy_vs_depth(results, out / "accuracy_vs_depth.png"))
    files.append(plots.accuracy_vs_time(results, out / "accuracy_vs_time.png"))
    if "admm" in config.methods and config.depths:
        files.append(plots.admm_convergence(results, out / "admm_convergence.png"))
    if best_conv is not None:
        from ..io import save_model
        _, weights, arch, seed = best_conv
        save_model(out / "best_admm_conv.safetensors", weights, params.delta, params.theta,
                   {"settings": config.conv_settings().replace(seed=seed).to_dict(), "data": config.data.to_dict(),
                    "source": "admm-snn compare"}, arch=arch, input_shape=list(sensor_shape))
        results["best_conv_model"] = {"arch": arch, "seed": seed, "model": "best_admm_conv.safetensors"}
    if best is not None:
        from ..io import save_model
        _, weights, depth, seed = best
        save_model(out / "best_admm.safetensors", weights, params.delta, params.theta,
                   {"settings": config.admm.replace(seed=seed).to_dict(), "data": config.data.to_dict(),
                    "depth": depth, "source": "admm-snn compare"})
        idx = min(config.plot_sample, test[0].shape[1] - 1)
        files.append(plots.sample_activity(weights, test[0][:, idx], int(test[1][idx]), params,
                                           out / "sample_activity.png",
                                           title=f"best ADMM model ({depth} hidden, seed {seed}), test sample {idx}"))
        results["sample_plot"] = {"depth": depth, "seed": seed, "test_index": idx,
                                  "model": "best_admm.safetensors"}
    results["plots"] = [p.name for p in files if p is not None]
    results["total_s"] = time.perf_counter() - t_start
    results["complete"] = True
    write_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results))
    log(f"wrote {out / 'results.md'}, {out / 'results.json'} and {len(results['plots'])} plots in "
        f"{results['total_s'] / 60:.1f} min")
    return results


def _record(results: dict, r: dict, k: int, total: int, t0: float, t_start: float, out: Path, log) -> int:
    """Append run ``r`` to the results, log it and rewrite results.json; the number of runs done."""
    k += 1
    results["runs"].append(r)
    m = r["method"]
    where = f"depth {r['depth']}" if r.get("arch") is None else f"arch {r['arch']}"
    steps = (f", {r['iterations']} iterations" if m == "admm" else
             f", {r['epochs']:.2f} epochs" if m == "bptt" else "")
    log(f"[{k}/{total}] {m:5s} {where} seed {r['seed']}: test {r['test_accuracy']:.3f} val "
        f"{r['val_accuracy'] if r['val_accuracy'] is not None else float('nan'):.3f} train "
        f"{r['train_s']:.1f} s{steps} (call {time.perf_counter() - t0:.1f} s), peak +{r['peak_memory_mib']:.0f} "
        f"MiB, rates {[round(x, 3) for x in r['firing_rate']]}; elapsed "
        f"{(time.perf_counter() - t_start) / 60:.1f} min")
    results["total_s"] = time.perf_counter() - t_start
    write_json(out / "results.json", results)
    return k


def plot_saved_model(model_path, data: DataOptions, sample: int, out: str | Path, log=print) -> Path:
    """Spike raster and potential traces of test sample ``sample`` for a model written by ``admm-snn train``
    or by compare (``best_admm.safetensors``)."""
    from . import plots
    from ..io import load_model
    model = load_model(Path(model_path))
    if model.get("arch"):
        raise SettingsError(f"{model_path} is a convolutional model ({model['arch']}); the activity plot draws "
                            "dense models only")
    splits = load_splits(data)
    ds = splits.test if splits.test is not None else splits.val
    if ds is None:
        raise SettingsError("no test or validation split to take the sample from; use --test-fraction > 0")
    if not 0 <= sample < len(ds):
        raise SettingsError(f"--plot-sample {sample} is outside the {len(ds)} test samples (0..{len(ds) - 1})")
    if ds.n_inputs != model["sizes"][0]:
        raise SettingsError(f"{model_path} expects {model['sizes'][0]} inputs but the data has {ds.n_inputs}; "
                            "give the data options it was trained with")
    frames = ds.time_major()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = plots.sample_activity(model["weights"], frames[:, sample], int(ds.labels[sample]),
                                 LIFParams(model["delta"], model["theta"]), out / "sample_activity.png",
                                 title=f"{Path(model_path).name}, test sample {sample}")
    log(f"wrote {path}")
    return path
