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

    def __post_init__(self):
        if not self.depths or any((not isinstance(d, int)) or d < 1 for d in self.depths):
            raise SettingsError(f"depths {self.depths} must be integers >= 1 (number of hidden layers)")
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

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("depths", "seeds", "hidden_width", "methods", "metrics_every",
                                            "device", "plot_sample")}
        d.update(data=self.data.to_dict(), admm=self.admm.to_dict(), bptt=asdict(self.bptt))
        return d


def floor_settings(settings: ADMMSettings) -> ADMMSettings:
    """The settings whose ``init_state`` is the floor: forward init, top-down order, joint readout."""
    return settings.replace(init="forward", order="top-down", output_solve="joint", iterations=0)


def admm_starts_at_floor(settings: ADMMSettings) -> bool:
    return floor_settings(settings).replace(iterations=settings.iterations) == settings



# ------------------------------------------------------------------------------------------- methods

def run_floor(X, labels, val, test, hidden, settings: ADMMSettings, device="cpu") -> dict:
    from ..admm import solver as S
    fs = floor_settings(settings)
    dtype = S.DTYPES[fs.dtype]
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        Xd = X.to(device=device, dtype=dtype)
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
             device="cpu", progress=False) -> dict:
    from ..train import train
    n_classes = int(max(int(labels.max()), int(val[1].max()), int(test[1].max())) + 1)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        res = train(X, labels, hidden, settings, n_classes=n_classes, val=val, progress=progress, device=device,
                    metrics_every=metrics_every, log=lambda *a, **k: None)
        wall = time.perf_counter() - t0
    weights = [w.detach().cpu() for w in res.weights]
    # ADMM's own initialisation is the floor's fit; its time is taken from the floor's call, capped by the
    # part of this call not spent in iterations (initialisation + evaluation), so that a burst of load from
    # other jobs during the separate floor call cannot make ADMM's time exceed its own call.
    compute = res.history[-1]["wall_s"] if res.history else 0.0
    starts = floor is not None and admm_starts_at_floor(settings)
    offset = min(floor["train_s"], max(0.0, wall - compute)) if starts else 0.0
    curve = [(offset, floor["val_accuracy"])] if starts else []
    curve += [(offset + h["wall_s"], h["val_accuracy"]) for h in res.history]
    selected = next((h["val_accuracy"] for h in res.history if h["iteration"] == res.best_iteration), None)
    if selected is None and starts:
        selected = floor["val_accuracy"]
    params = settings.lif
    te = evaluate(weights, test[0], test[1], params)
    keep = ("iteration", "wall_s", "loss", "lagrangian", "residual_output", "residual_dynamics",
            "residual_spike", "spike_gap", "train_accuracy", "val_accuracy", "firing_rate")
    history = [{k: h.get(k) for k in keep} for h in res.history]
    train_s = offset + compute
    out = {"method": "admm", "weights": weights, "train_s": train_s, "wall_s": wall, "best_iteration": res.best_iteration,
           "iterations": res.iterations, "val_accuracy": selected, "test_accuracy": te["accuracy"],
           "firing_rate": te["firing_rate"], "synaptic_ops": te["synaptic_ops"], "curve": curve,
           "peak_memory_mib": mem.bytes / 2 ** 20, "history": history,
           "starts_at_floor": starts}
    for f in FRACTIONS:
        out[f"time_to_{round(f * 100)}"] = time_to_fraction(curve, selected, f) if selected is not None else None
    return out


def run_bptt(X, labels, val, test, hidden, bptt_settings, params: LIFParams, device="cpu", progress=False) -> dict:
    from ..baselines.bptt import train_bptt
    n_classes = int(max(int(labels.max()), int(val[1].max()), int(test[1].max())) + 1)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        res = train_bptt(X, labels, hidden, params, bptt_settings, val[0], val[1], device=device,
                         progress=progress, n_classes=n_classes)
        wall = time.perf_counter() - t0
    weights = [w.detach().cpu() for w in res.weights]
    curve = [(h["wall_s"], h["val_acc"]) for h in res.history]
    selected = max(h["val_acc"] for h in res.history)
    te = evaluate(weights, test[0], test[1], params)
    out = {"method": "bptt", "weights": weights, "train_s": res.history[-1]["wall_s"], "wall_s": wall,
           "best_epoch": res.best_epoch, "epochs": len(res.history), "val_accuracy": selected,
           "test_accuracy": te["accuracy"], "firing_rate": te["firing_rate"], "synaptic_ops": te["synaptic_ops"],
           "curve": curve, "peak_memory_mib": mem.bytes / 2 ** 20,
           "bptt_peak_memory_mib": res.peak_memory_bytes / 2 ** 20,
           "history": [{k: h.get(k) for k in ("epoch", "wall_s", "train_loss", "train_acc", "val_acc")}
                       for h in res.history]}
    for f in FRACTIONS:
        out[f"time_to_{round(f * 100)}"] = time_to_fraction(curve, selected, f)
    return out


# ------------------------------------------------------------------------------------------- summary

SUMMARY_FIELDS = ("test_accuracy", "val_accuracy", "train_s", "wall_s", "time_to_90", "time_to_95",
                  "peak_memory_mib", "synaptic_ops")


def summarise(runs: list[dict], depths, methods) -> list[dict]:
    """Mean and sample standard deviation (n − 1) over seeds, per method and depth."""
    rows = []
    for depth in depths:
        for m in methods:
            rs = [r for r in runs if r["method"] == m and r["depth"] == depth]
            if not rs:
                continue
            row = {"method": m, "depth": depth, "seeds": len(rs)}
            for k in SUMMARY_FIELDS:
                row[k] = mean_std([r.get(k) for r in rs])
            n_layers = len(rs[0]["firing_rate"])
            row["firing_rate"] = [mean_std([r["firing_rate"][i] for r in rs]) for i in range(n_layers)]
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
    methods, depths = cfg["methods"], cfg["depths"]
    data = cfg["data"]
    by = {(r["method"], r["depth"]): r for r in summary}
    n_seeds = cfg["seeds"]
    nmnist = data["dataset"] == "nmnist"
    L = []
    L.append("# ADMM vs BPTT vs random-feature floor on "
             + ("N-MNIST (1,000-recording subset)" if nmnist else f"{data['dataset']}"))
    L.append("")
    L.append(f"Test accuracy (%) of the forward-simulated network, mean ± std over {n_seeds} seed(s); "
             f"{split['n_train']} train / {split['n_val']} validation / {split['n_test']} test recordings; "
             f"hidden layers of {cfg['hidden_width']} LIF neurons.")
    L.append("")
    head = ["Hidden layers"] + [METHOD_NAMES[m] for m in methods] + [METHOD_NAMES["paper"]]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "|".join(["---:"] * len(head)) + "|")
    for d in depths:
        cells = [str(d)] + [_pct(by[(m, d)]["test_accuracy"]) if (m, d) in by else "–" for m in methods]
        cells.append(f"{100 * PAPER_NMNIST[d]:.1f}" if d in PAPER_NMNIST else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append("Cost, mean ± std over seeds (training times on this machine: "
             f"{results['environment'].get('cpu_count')} CPU cores, {results['environment'].get('threads')} torch "
             "threads, shared with other jobs, so absolute times are noisy).")
    L.append("")
    head = ["Method", "Hidden layers", "Val. acc. (%)", "Train time (s)", "To 90% (s)", "To 95% (s)",
            "Peak memory (MiB)", "Firing rate per hidden layer", "SynOps / sample"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for d in depths:
        for m in methods:
            r = by.get((m, d))
            if r is None:
                continue
            rates = " / ".join(f"{x['mean']:.3f}" for x in r["firing_rate"] if x is not None)
            L.append("| " + " | ".join([METHOD_NAMES[m], str(d), _pct(r["val_accuracy"]), _num(r["train_s"]),
                                        _num(r["time_to_90"]), _num(r["time_to_95"]),
                                        _num(r["peak_memory_mib"], ".0f"), rates,
                                        _num(r["synaptic_ops"], ",.0f")]) + " |")
    L.append("")
    L.append("## How these numbers were made")
    L.append("")
    adm = cfg["admm"]
    L.append(f"- **Data.** {'N-MNIST: the ' + str(split['n_train'] + split['n_val'] + split['n_test']) + ' recordings in ' + str(data['data_dir']) if nmnist else data['dataset']}, "
             f"split stratified by digit with split seed {data['split_seed']} into train/validation/test "
             f"({split['n_train']}/{split['n_val']}/{split['n_test']}; test: {split['test_source']}). "
             + (f"Each recording: denoised ({data['denoise_ms']} ms filter), the first {data['time_steps']} frames of "
                f"{data['bin_ms']} ms ({data['time_steps'] * data['bin_ms']:.0f} ms of the ~300 ms recording), "
                "2·34·34 = 2312 binary inputs." if nmnist else f"{data['time_steps']} time steps, {data['encoding']} code."))
    L.append("- **Differences from the paper's setup.** The paper's figures (last column) are quoted, not reproduced: "
             "they are for the full N-MNIST (60,000 training and 10,000 test recordings) with 1 ms frames, the "
             "paper's initialisation (W = 0, z and a uniform) and its sequential update order. Here: "
             f"{split['n_train']} training recordings ({100 * split['n_train'] / 60000:.2g}% of 60,000), {data['bin_ms']} ms frames, "
             f"T = {data['time_steps']}, and this implementation's ADMM settings (below), which differ from the "
             "paper's where the spec found the paper's choices to train poorly. The numbers are therefore "
             "comparable with each other (same split, same network, same evaluation), not with the paper's.")
    from ..baselines.bptt import BPTTSettings
    lib_it, lib_ep = ADMMSettings().iterations, BPTTSettings().epochs
    if adm["iterations"] < lib_it or cfg["bptt"]["epochs"] < lib_ep:
        L.append(f"- **Budget.** ADMM {adm['iterations']} iterations and BPTT {cfg['bptt']['epochs']} epochs (library "
                 f"defaults: {lib_it} and {lib_ep}), chosen so that the whole comparison fits in 30 minutes on this "
                 "machine; methods still improving at the end are under-trained (see `accuracy_vs_time.png`).")
    L.append(f"- **ADMM.** `admm_snn.train.train`, {adm['iterations']} iterations, validation accuracy evaluated every "
             f"{cfg['metrics_every']} iteration(s) and the best iteration kept. Settings: {_settings_lines(adm)}; "
             "seed i uses seed + i.")
    bp = cfg["bptt"]
    L.append(f"- **BPTT.** `admm_snn.baselines.bptt.train_bptt` (snnTorch Leaky neurons with the same dynamics, "
             f"fast-sigmoid surrogate, Adam, cross-entropy on the last output potential), {bp['epochs']} epochs, the "
             f"epoch with the best validation accuracy kept (no early stop). Settings: {_settings_lines(bp)}.")
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
             "the per-iteration evaluation), BPTT epoch times (without validation). **To 90% / 95%**: training "
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
    L.append("Plots: `accuracy_vs_depth.png`, `accuracy_vs_time.png`, `admm_convergence.png`, `sample_activity.png`.")
    L.append("")
    return "\n".join(L)



# ------------------------------------------------------------------------------------------- compare

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
    X, labels = splits.train.time_major(), splits.train.labels
    val = (splits.val.time_major(), splits.val.labels)
    test = (splits.test.time_major(), splits.test.labels)
    log(f"data: {splits.info['n_train']} train, {splits.info['n_val']} val, {splits.info['n_test']} test "
        f"({splits.info['test_source']}), T={X.shape[0]}, {X.shape[2]} inputs; loaded in "
        f"{time.perf_counter() - t_start:.1f} s")
    params = config.admm.lif
    results = {"config": config.to_dict(), "split": splits.info, "environment": environment(),
               "paper": {str(k): v for k, v in PAPER_NMNIST.items()}, "runs": [], "summary": [],
               "admm_starts_at_floor": admm_starts_at_floor(config.admm), "complete": False}
    best = None  # (val accuracy, weights, depth, seed) of the best ADMM run
    total = len(config.depths) * config.seeds * len(config.methods)
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
                                 config.device, config.progress)
                else:
                    bs = config.bptt.__class__(**{**asdict(config.bptt), "seed": config.bptt.seed + i})
                    r = run_bptt(X, labels, val, test, hidden, bs, params, config.device, config.progress)
                k += 1
                weights = r.pop("weights")
                if m == "admm" and r["val_accuracy"] is not None and (best is None or r["val_accuracy"] > best[0]):
                    best = (r["val_accuracy"], weights, depth, seed)
                r.update(depth=depth, seed=i)
                results["runs"].append(r)
                log(f"[{k}/{total}] {m:5s} depth {depth} seed {i}: test {r['test_accuracy']:.3f} val "
                    f"{r['val_accuracy'] if r['val_accuracy'] is not None else float('nan'):.3f} train "
                    f"{r['train_s']:.1f} s (call {time.perf_counter() - t0:.1f} s), peak +{r['peak_memory_mib']:.0f} "
                    f"MiB, rates {[round(x, 3) for x in r['firing_rate']]}; elapsed "
                    f"{(time.perf_counter() - t_start) / 60:.1f} min")
                results["total_s"] = time.perf_counter() - t_start
                write_json(out / "results.json", results)
    results["summary"] = summarise(results["runs"], config.depths, config.methods)
    files = []
    files.append(plots.accuracy_vs_depth(results, out / "accuracy_vs_depth.png"))
    files.append(plots.accuracy_vs_time(results, out / "accuracy_vs_time.png"))
    if "admm" in config.methods:
        files.append(plots.admm_convergence(results, out / "admm_convergence.png"))
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


def plot_saved_model(model_path, data: DataOptions, sample: int, out: str | Path, log=print) -> Path:
    """Spike raster and potential traces of test sample ``sample`` for a model written by ``admm-snn train``
    or by compare (``best_admm.safetensors``)."""
    from . import plots
    from ..io import load_model
    model = load_model(Path(model_path))
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
