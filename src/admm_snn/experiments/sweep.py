"""Grid sweeps of the ADMM penalties (``admm-snn sweep``): one ADMM network per point of a ρ × β grid
(× the values of one more setting), each scored by the validation accuracy of the forward simulation at
its best iteration."""

from __future__ import annotations

import time
from pathlib import Path

from ..admm.settings import ADMMSettings
from ..errors import SettingsError
from ..data.options import DataOptions, load_splits
from .common import environment, write_json

def coerce_setting(name: str, values: list[str]) -> list:
    """Parse the string ``values`` for the ADMMSettings field ``name`` by the type of the field."""
    import dataclasses
    fields = {f.name: f for f in dataclasses.fields(ADMMSettings)}
    if name not in fields:
        raise SettingsError(f"--param {name}: not a setting; choose one of {', '.join(sorted(fields))}")
    if name in ("rho", "beta", "seed"):
        raise SettingsError(f"--param {name}: {name} is already an axis of the sweep (use --rho/--beta values)"
                            if name != "seed" else "--param seed: sweep a real setting, not the seed")
    typ = str(fields[name].type)
    out = []
    for v in values:
        try:
            if "bool" in typ:
                if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(v)
                out.append(v.lower() in ("true", "1", "yes"))
            elif "int" in typ:
                out.append(None if v.lower() == "none" and "None" in typ else int(v))
            elif "float" in typ:
                out.append(None if v.lower() == "none" and "None" in typ else float(v))
            else:
                out.append(v)
        except ValueError:
            raise SettingsError(f"--param {name}: {v!r} is not a valid {typ}") from None
    return out


def run_sweep(data: DataOptions, base: ADMMSettings, rhos: list[float], betas: list[float], hidden: list[int],
              out: str | Path, param: tuple[str, list] | None = None, metrics_every: int = 1, device="cpu",
              log=print, report_samples: int | None = None, val_samples: int | None = None) -> dict:
    """Train one ADMM network per grid point (ρ × β [× one more setting]) and record its validation
    accuracy (forward simulation, best iteration). Writes sweep.json, sweep.md and sweep.png."""
    from . import plots
    from ..errors import DivergenceError
    from ..train import train
    if not rhos or not betas:
        raise SettingsError("the sweep needs at least one ρ and one β value")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    splits = load_splits(data, need_test=False)
    if splits.val is None:
        raise SettingsError("the sweep selects on the validation split: use --val-fraction > 0")
    X, labels = splits.train.time_major(dtype=splits.train.frames.dtype), splits.train.labels
    val = (splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels)
    n_classes = int(max(int(labels.max()), int(val[1].max())) + 1)
    report = {"report_samples": report_samples, "val_samples": val_samples}
    pname, pvalues = param if param else (None, [None])
    grid = []
    for pv in pvalues:
        for beta in betas:
            for rho in rhos:
                changes = {"rho": float(rho), "beta": float(beta)}
                if pname:
                    changes[pname] = pv
                grid.append(changes)
    settings_list = [base.replace(**c) for c in grid]  # validates every point before training any
    log(f"sweep: {len(grid)} settings × {base.iterations} iterations on {splits.info['n_train']} train / "
        f"{splits.info['n_val']} val, hidden {hidden}")
    points = []
    for k, (c, s) in enumerate(zip(grid, settings_list), 1):
        t0 = time.perf_counter()
        p = dict(c)
        try:
            res = train(X, labels, hidden, s, n_classes=n_classes, val=val, progress=False, device=device,
                        metrics_every=metrics_every, log=lambda *a, **kw: None, **report)
            h = res.history
            best = next((x for x in h if x["iteration"] == res.best_iteration), None)
            p.update(val_accuracy=best["val_accuracy"] if best else None,
                     best_iteration=res.best_iteration,
                     final_val_accuracy=h[-1]["val_accuracy"] if h else None,
                     train_accuracy=best["train_accuracy"] if best else None,
                     spike_gap=best["spike_gap"] if best else None,
                     firing_rate=best["firing_rate"] if best else None,
                     val_curve=[x["val_accuracy"] for x in h], train_s=h[-1]["wall_s"] if h else 0.0,
                     status="ok")
        except DivergenceError as exc:
            p.update(val_accuracy=None, status=f"diverged: {exc}")
        points.append(p)
        va = p["val_accuracy"]
        what = f"val {va:.3f}" if va is not None else p["status"]
        log(f"[{k}/{len(grid)}] rho={c['rho']:g} beta={c['beta']:g}" + (f" {pname}={c[pname]}" if pname else "")
            + f": {what} ({time.perf_counter() - t0:.1f} s)")
    results = {"data": data.to_dict(), "split": splits.info, "hidden": hidden, "base_settings": base.to_dict(),
               "rho": [float(r) for r in rhos], "beta": [float(b) for b in betas],
               "param": {"name": pname, "values": pvalues} if pname else None, "points": points,
               "environment": environment(), "total_s": time.perf_counter() - t_start}
    ok = [p for p in points if p["val_accuracy"] is not None]
    results["best"] = max(ok, key=lambda p: p["val_accuracy"]) if ok else None
    plots.sweep_heatmap(results, out / "sweep.png")
    write_json(out / "sweep.json", results)
    (out / "sweep.md").write_text(sweep_markdown(results))
    log(f"wrote {out / 'sweep.md'}, {out / 'sweep.json'}, {out / 'sweep.png'} in {results['total_s'] / 60:.1f} min")
    return results


def sweep_markdown(results: dict) -> str:
    pname = results["param"]["name"] if results["param"] else None
    pvalues = results["param"]["values"] if results["param"] else [None]
    L = ["# ADMM sweep: validation accuracy (%) of the forward simulation, best iteration", ""]
    split = results["split"]
    base = results["base_settings"]
    L.append(f"{results['data']['dataset']}, {split['n_train']} train / {split['n_val']} validation, hidden "
             f"{results['hidden']}, {base['iterations']} iterations; other settings: "
             + ", ".join(f"{k}={v}" for k, v in base.items() if k not in ("rho", "beta", pname)) + ".")
    L.append("")
    for pv in pvalues:
        if pname:
            L.append(f"## {pname} = {pv}")
            L.append("")
        L.append("| β \\ ρ | " + " | ".join(f"{r:g}" for r in results["rho"]) + " |")
        L.append("|---:|" + "---:|" * len(results["rho"]))
        for b in results["beta"]:
            cells = []
            for r in results["rho"]:
                p = next(p for p in results["points"] if p["rho"] == r and p["beta"] == b
                         and (pname is None or p[pname] == pv))
                cells.append(f"{100 * p['val_accuracy']:.1f}" if p["val_accuracy"] is not None else "div.")
            L.append(f"| {b:g} | " + " | ".join(cells) + " |")
        L.append("")
    if results["best"]:
        b = results["best"]
        L.append(f"Best: ρ = {b['rho']:g}, β = {b['beta']:g}" + (f", {pname} = {b[pname]}" if pname else "")
                 + f": {100 * b['val_accuracy']:.1f}% at iteration {b['best_iteration']}.")
    L.append(f"Sweep time: {results['total_s'] / 60:.1f} min.")
    L.append("")
    return "\n".join(L)
