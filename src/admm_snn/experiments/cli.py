"""The command line of the experiments: ``admm-snn compare``, ``admm-snn sweep`` and ``admm-snn bench``
(and ``bench/*.py``). Options become the records of :mod:`admm_snn.experiments.compare`,
:mod:`admm_snn.experiments.sweep` and :mod:`admm_snn.experiments.bench`, which hold the experiments
themselves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parsers(subparsers) -> None:
    """Register compare, sweep and bench on the ``admm-snn`` sub-command parser."""
    add_compare_parser(subparsers)
    add_sweep_parser(subparsers)
    add_bench_parser(subparsers)


# ----------------------------------------------------------------------------------------------- compare

# Without --budget-s each method trains for its library default (ADMMSettings.iterations, BPTTSettings.epochs),
# the settings each was tuned at. The default comparison (the 1,000 N-MNIST recordings, depths 1 2 3 5, 3 seeds,
# width 128) then takes about half an hour on a 2-core CPU (docs/results.md); give --budget-s for equal time.
# With --budget-s the budget decides when each method stops: these caps apply unless --iterations or
# --bptt-epochs are given.
BUDGET_CAP_ITERATIONS = 10000
BUDGET_CAP_EPOCHS = 10000
# Default depths: the N-MNIST and digits comparisons (1 2 3 5, the paper's N-MNIST depths but 4) and the
# image datasets' (1 3 5 7).
DEPTHS = [1, 2, 3, 5]
IMAGE_DEPTHS = [1, 3, 5, 7]
# BPTT's Adam learning rate on the image datasets: BPTTSettings' 5e-3 was tuned on 800 N-MNIST recordings;
# on MNIST (3,000 train / 1,000 validation images, T = 20 rate code, 784-128-10, 15 epochs) the best
# validation accuracy was 0.932 / 0.938 / 0.920 with lr 1e-3 / 2e-3 / 5e-3 (docs/compare.md).
IMAGE_BPTT_LR = 2e-3


def add_bptt_options(p: argparse.ArgumentParser) -> None:
    from ..baselines.bptt import BPTTSettings
    d = BPTTSettings()
    g = p.add_argument_group("BPTT baseline (snnTorch; see BPTTSettings)")
    g.add_argument("--bptt-epochs", type=int, default=d.epochs, metavar="E",
                   help=f"training epochs; the best validation epoch is kept (default {d.epochs})")
    g.add_argument("--bptt-lr", type=float, default=None,
                   help=f"Adam learning rate (default {IMAGE_BPTT_LR:g} on mnist, fashion-mnist, kmnist, tuned on "
                        f"MNIST validation images; {d.lr:g} otherwise)")
    g.add_argument("--bptt-batch-size", type=int, default=d.batch_size, help=f"mini-batch size (default {d.batch_size})")
    g.add_argument("--bptt-weight-decay", type=float, default=d.weight_decay,
                   help=f"Adam weight decay (default {d.weight_decay})")
    g.add_argument("--bptt-surrogate-slope", type=float, default=d.surrogate_slope,
                   help=f"fast-sigmoid surrogate slope (default {d.surrogate_slope})")
    g.add_argument("--bptt-init-scale", type=float, default=d.init_scale,
                   help=f"initial weights U(±s/√fan-in) (default {d.init_scale})")
    g.add_argument("--bptt-init-rate", type=float, default=d.init_rate, metavar="R",
                   help="rescale each hidden layer's initial weights so it fires at rate R (default: off)")


def bptt_settings(args, dataset: str | None = None):
    from ..baselines.bptt import BPTTSettings
    from ..data.idx import IMAGE_DATASETS
    lr = args.bptt_lr
    if lr is None:
        lr = IMAGE_BPTT_LR if dataset in IMAGE_DATASETS else BPTTSettings().lr
    return BPTTSettings(epochs=args.bptt_epochs, lr=lr, batch_size=args.bptt_batch_size,
                        weight_decay=args.bptt_weight_decay, surrogate_slope=args.bptt_surrogate_slope,
                        seed=args.seed, init_scale=args.bptt_init_scale, init_rate=args.bptt_init_rate)


def resolve_dataset(args) -> None:
    """--dataset defaults, when --data-dir is given, to mnist if the folder holds the IDX training files
    (train-images-idx3-ubyte[.gz], ...) and else to nmnist; without --data-dir to the bundled digits."""
    if args.dataset is None:
        if not args.data_dir:
            args.dataset = "digits"
        else:
            from ..data.idx import find_idx_files
            root = Path(args.data_dir).expanduser()
            args.dataset = "mnist" if root.is_dir() and find_idx_files(root, "train", "mnist") else "nmnist"


def add_compare_parser(subparsers) -> None:
    from ..options import DEFAULT_HIDDEN, add_admm_options, add_data_options, add_report_options
    p = subparsers.add_parser(
        "compare", help="ADMM vs BPTT vs random-feature floor over depths and seeds",
        description="Train ADMM, the snnTorch BPTT baseline and the floor (random hidden weights + least-squares "
                    "readout) for every depth and seed on one stratified train/validation/test split, optionally "
                    "with the same training-time budget for ADMM and BPTT (--budget-s); write results.md (test "
                    "accuracy per depth, accuracy against training time, cost), results.json and PNG plots to --out. "
                    "The dataset is MNIST when --data-dir holds IDX files (train-images-idx3-ubyte[.gz] ...), N-MNIST when "
                    "it holds Train/<digit>/*.bin, else (no --data-dir) the bundled digits.")
    add_data_options(p)
    p.set_defaults(dataset=None)
    g = p.add_argument_group("comparison")
    g.add_argument("--depths", type=int, nargs="+", default=None, metavar="L",
                   help="numbers of hidden layers to compare (default " + " ".join(map(str, IMAGE_DEPTHS))
                        + " for mnist, fashion-mnist, kmnist; " + " ".join(map(str, DEPTHS)) + " otherwise; none with --arch)")
    g.add_argument("--arch", dest="archs", action="append", default=None, metavar="SPEC",
                   help="a convolutional row: ADMM (conv_train.fit_conv), BPTT (train_bptt_conv) and the floor on "
                        "the convolutional network SPEC, e.g. 12c5-p2-32c5-p2-128, with the same split, seeds and "
                        "budget and augmentation as the dense rows; repeat for more rows. With --arch and no "
                        "--depths only conv rows are run; give --depths too for dense rows in the same tables")
    g.add_argument("--seeds", type=int, default=3, metavar="S",
                   help="seeds per depth and method; seed i uses --seed + i (default 3)")
    g.add_argument("--hidden-width", "--hidden", type=int, default=DEFAULT_HIDDEN, metavar="N",
                   help=f"neurons per hidden layer, e.g. 512 for 784-512-10 (default {DEFAULT_HIDDEN})")
    g.add_argument("--budget-s", type=float, default=None, metavar="S",
                   help="the same training-time budget for every ADMM and BPTT run: ADMM stops its iterations, BPTT "
                        "its mini-batches, once S seconds of training (without evaluation) are spent; the iteration "
                        f"and epoch caps become {BUDGET_CAP_ITERATIONS} unless --iterations/--bptt-epochs are given "
                        "(default: no budget)")
    g.add_argument("--augment-shift", type=int, default=None, metavar="S",
                   help="shift augmentation for ADMM and BPTT alike, dense and conv rows: the training samples move by new random offsets "
                        "in [-S, S]^2 pixels (16 fixed groups of samples, one offset per group and draw) at every ADMM "
                        "re-projection and every BPTT epoch after the first (default: 1 on sensors of at least 16x16 "
                        "pixels such as MNIST and N-MNIST, 0 on smaller ones; 0: off)")
    g.add_argument("--methods", nargs="+", choices=["admm", "bptt", "floor"], default=["admm", "bptt", "floor"],
                   help="which methods to run (default all three)")
    g.add_argument("--metrics-every", type=int, default=1, metavar="K",
                   help="evaluate ADMM (and select the model) every K iterations (default 1)")
    g.add_argument("--out", metavar="DIR", default="runs/compare", help="output folder (default runs/compare)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--plot-sample", type=int, default=0, metavar="IDX",
                   help="test sample whose spike raster and potentials are plotted (default 0)")
    g.add_argument("--plot-model", metavar="MODEL",
                   help="only draw the sample plot (--plot-sample) for this model (a folder from 'admm-snn train' "
                        "or best_admm.safetensors from an earlier compare) into --out, and train nothing")
    g.add_argument("--progress", action="store_true", help="progress bars for each training run")
    add_report_options(g)
    add_admm_options(p)
    add_bptt_options(p)
    p.set_defaults(func=run_compare_command)


def run_compare_command(args) -> int:
    from ..options import _given_options, admm_settings, check_device as _device, data_options
    from ..data.idx import IMAGE_DATASETS
    from .compare import CompareConfig, plot_saved_model, run_compare
    resolve_dataset(args)
    data = data_options(args)
    if args.plot_model:
        plot_saved_model(args.plot_model, data, args.plot_sample, args.out)
        return 0
    if args.archs:
        from ..arch import parse_arch
        for a in args.archs:
            parse_arch(a)  # a bad --arch fails before any data is read
    if args.depths is None:
        args.depths = [] if args.archs else list(IMAGE_DEPTHS if data.dataset in IMAGE_DATASETS else DEPTHS)
    if args.budget_s is not None:
        given = _given_options(getattr(args, "argv", None) or sys.argv[1:])
        if "iterations" not in given:
            args.iterations = BUDGET_CAP_ITERATIONS
        if "bptt_epochs" not in given:
            args.bptt_epochs = BUDGET_CAP_EPOCHS
    config = CompareConfig(data=data, admm=admm_settings(args), bptt=bptt_settings(args, data.dataset), depths=args.depths,
                           seeds=args.seeds, hidden_width=args.hidden_width, methods=args.methods,
                           metrics_every=args.metrics_every, device=_device(args.device),
                           plot_sample=args.plot_sample, progress=args.progress, budget_s=args.budget_s,
                           report_samples=args.report_samples, val_samples=args.val_samples,
                           augment_shift=args.augment_shift, archs=args.archs or [],
                           arch_loss_steps=1 if args.loss_steps is None else None)
    run_compare(config, args.out, log=lambda msg: print(msg, flush=True))
    return 0


# ------------------------------------------------------------------------------------------------- sweep

# A 3 x 3 grid around the current defaults with 2 iterations per point: a few minutes on the 2-core CPU with
# the 1,000 N-MNIST recordings (4 iterations took 11 min there under a load of ~8; seconds on the digits).
SWEEP_ITERATIONS = 2
RHO_FACTORS = (0.3, 1.0, 3.0)
BETA_FACTORS = (0.3, 1.0, 3.0)


def add_sweep_parser(subparsers) -> None:
    from ..admm.settings import ADMMSettings
    from ..options import DEFAULT_HIDDEN, add_admm_options, add_data_options, add_report_options
    d = ADMMSettings()
    p = subparsers.add_parser(
        "sweep", help="grid search over ρ and β (and one more setting) by validation accuracy",
        description="Train one ADMM network per point of a ρ × β grid (× the values of one more setting with "
                    "--param NAME V1 V2 ...) and report the validation accuracy of the forward simulation at the "
                    "best iteration: sweep.png (heatmap), sweep.md, sweep.json in --out. The dataset is N-MNIST "
                    "when --data-dir holds Train/<digit>/*.bin, MNIST when it holds IDX files, else the bundled digits.")
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
    add_report_options(g)
    add_admm_options(p)
    p.set_defaults(iterations=SWEEP_ITERATIONS, func=run_sweep_command)
    for a in p._actions:
        if a.dest == "iterations":
            a.help = f"ADMM iterations per grid point (sweep default {SWEEP_ITERATIONS})"
    p.epilog = f"Defaults now: ρ = {d.rho}, β = {d.beta}."


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def run_sweep_command(args) -> int:
    from ..admm.settings import ADMMSettings
    from ..options import DEFAULT_HIDDEN, admm_settings, check_device as _device, data_options
    from .sweep import coerce_setting, run_sweep
    from ..errors import SettingsError
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
              args.metrics_every, _device(args.device), log=lambda msg: print(msg, flush=True),
              report_samples=args.report_samples, val_samples=args.val_samples)
    return 0


# ------------------------------------------------------------------------------------------------- bench

def add_bench_parser(subparsers) -> None:
    from . import bench
    p = subparsers.add_parser(
        "bench", help="time ADMM iterations of both schedules (speed, FLOP rate, memory)",
        description=bench.__doc__.split("\n\n")[0] + " Writes bench.md, bench.json and bench.png into --out.")
    _bench_arguments(p)
    p.set_defaults(func=run_bench_command)


def run_bench_command(args) -> int:
    if args.arch:  # a convolutional network: its own measurement (experiments/bench_conv.py)
        from .bench_conv import run as run_conv
        return run_conv(args)
    from .bench import run
    return run(args)


def bench_main(argv=None) -> int:
    """``bench/speed.py``: the bench command as a script."""
    from . import bench
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return bench.child_main(argv)
    p = argparse.ArgumentParser(prog="bench/speed.py", description=bench.__doc__.split("\n\n")[0])
    _bench_arguments(p)
    return run_bench_command(p.parse_args(argv))


def _bench_arguments(p) -> None:
    p.add_argument("--n", type=int, nargs="+", default=[1000], metavar="N", help="numbers of samples (default 1000)")
    p.add_argument("--time-steps", type=int, default=30, metavar="T", help="frames per sample (default 30)")
    p.add_argument("--hidden", type=int, nargs="+", default=[128], metavar="W",
                   help="hidden widths (default 128); one width with --depth D repeats it D times")
    p.add_argument("--depth", type=int, default=None, metavar="D", help="number of hidden layers")
    p.add_argument("--arch", default=None, metavar="SPEC",
                   help="a convolutional network on N-MNIST-shaped data (e.g. 8c5-p4-64): seconds per iteration, "
                        "FLOPs by layer and the measured conv2d rate (experiments/bench_conv.py); --hidden, "
                        "--schedules and --preset do not apply")
    p.add_argument("--conv-spike-solve", choices=["auto", "direct", "cg"], default="auto",
                   help="with --arch: how the spikes below a convolution are solved (as admm-snn train's option; "
                        "default auto)")
    p.add_argument("--schedules", nargs="+", default=["parallel", "sequential"],
                   choices=["parallel", "sequential"], help="which schedules (default both)")
    p.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="solver settings: the defaults, or ADMMSettings.paper() (schedule replaced per row)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override one setting, e.g. --set chunk_size=2000 (JSON values)")
    p.add_argument("--iterations", type=int, default=3, metavar="K", help="timed iterations (default 3)")
    p.add_argument("--seq-iterations", type=int, default=1, metavar="K",
                   help="timed iterations of the sequential schedule (default 1)")
    p.add_argument("--seq-max-n", type=int, default=4000, metavar="N",
                   help="measure the sequential schedule on at most this many samples and scale (default 4000)")
    p.add_argument("--inputs", type=int, default=2312, metavar="N0",
                   help="inputs per frame (default 2312, N-MNIST); another width uses random binary frames")
    p.add_argument("--density", type=float, default=0.035, metavar="D",
                   help="fraction of active inputs of random frames (default 0.035, N-MNIST's)")
    p.add_argument("--frames", choices=["uint8", "float32"], default="uint8",
                   help="how the frames are stored (default uint8)")
    p.add_argument("--data-dir", default=None, metavar="ROOT",
                   help="real N-MNIST (default ../shared/data/nmnist next to the repository, if present)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="cache of framed N-MNIST")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="K", help="torch threads (default: torch's)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the timed-by-block iteration")
    p.add_argument("--accuracy", action="store_true",
                   help="also report the training accuracy of the forward simulation after the iterations")
    p.add_argument("--timeout", type=float, default=3600, metavar="S", help="seconds per child (default 3600)")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default bench-out)")
