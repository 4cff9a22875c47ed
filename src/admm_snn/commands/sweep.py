"""``admm-snn sweep``: validation accuracy of ADMM over a ρ × β grid (optionally × one more setting)."""

from __future__ import annotations

# A 3 x 3 grid around the current defaults with 2 iterations per point: a few minutes on the 2-core CPU with
# the 1,000 N-MNIST recordings (4 iterations took 11 min there under a load of ~8; seconds on the digits).
SWEEP_ITERATIONS = 2
RHO_FACTORS = (0.3, 1.0, 3.0)
BETA_FACTORS = (0.3, 1.0, 3.0)


def add_parser(subparsers) -> None:
    from ..admm.settings import ADMMSettings
    from ..cli import DEFAULT_HIDDEN, add_admm_options, add_data_options
    d = ADMMSettings()
    p = subparsers.add_parser(
        "sweep", help="grid search over ρ and β (and one more setting) by validation accuracy",
        description="Train one ADMM network per point of a ρ × β grid (× the values of one more setting with "
                    "--param NAME V1 V2 ...) and report the validation accuracy of the forward simulation at the "
                    "best iteration: sweep.png (heatmap), sweep.md, sweep.json in --out. The dataset is N-MNIST "
                    "when --data-dir is given, else the bundled digits.")
    add_data_options(p)
    p.set_defaults(dataset=None)
    g = p.add_argument_group("sweep")
    g.add_argument("--rho-grid", type=float, nargs="+", metavar="RHO",
                   help="ρ values (default: " + " ".join(f"{f:g}" for f in RHO_FACTORS) + " times the default ρ)")
    g.add_argument("--beta-grid", type=float, nargs="+", metavar="BETA",
                   help="β values (default: " + " ".join(f"{f:g}" for f in BETA_FACTORS) + " times the default β)")
    g.add_argument("--param", nargs="+", metavar=("NAME", "VALUE"),
                   help="one more setting to sweep, e.g. --param weight_step 1 2 4")
    g.add_argument("--hidden", type=int, action="append", metavar="N",
                   help=f"width of a hidden layer; repeat for more layers (default: one of {DEFAULT_HIDDEN})")
    g.add_argument("--metrics-every", type=int, default=1, metavar="K",
                   help="evaluate every K iterations (default 1)")
    g.add_argument("--out", metavar="DIR", default="runs/sweep", help="output folder (default runs/sweep)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_admm_options(p)
    p.set_defaults(iterations=SWEEP_ITERATIONS, func=run)
    for a in p._actions:
        if a.dest == "iterations":
            a.help = f"ADMM iterations per grid point (sweep default {SWEEP_ITERATIONS})"
    p.epilog = f"Defaults now: ρ = {d.rho}, β = {d.beta}."


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def run(args) -> int:
    from ..admm.settings import ADMMSettings
    from ..cli import DEFAULT_HIDDEN, _device, admm_settings, data_options
    from ..compare import coerce_setting, run_sweep
    from ..errors import SettingsError
    from .compare import resolve_dataset
    resolve_dataset(args)
    base = admm_settings(args)
    d = ADMMSettings()
    rhos = args.rho_grid or [_round(f * d.rho) for f in RHO_FACTORS]
    betas = args.beta_grid or [_round(f * d.beta) for f in BETA_FACTORS]
    param = None
    if args.param:
        if len(args.param) < 2:
            raise SettingsError("--param needs a setting name and at least one value, e.g. --param weight_step 1 2")
        param = (args.param[0], coerce_setting(args.param[0], args.param[1:]))
    if args.metrics_every < 1:
        raise SettingsError(f"--metrics-every {args.metrics_every} must be >= 1")
    run_sweep(data_options(args), base, rhos, betas, args.hidden or [DEFAULT_HIDDEN], args.out, param,
              args.metrics_every, _device(args.device), log=lambda msg: print(msg, flush=True))
    return 0
