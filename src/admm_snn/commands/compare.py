"""``admm-snn compare``: ADMM vs BPTT vs the random-feature floor over depths and seeds (see
:mod:`admm_snn.compare`)."""

from __future__ import annotations

import argparse

# Fewer iterations/epochs than the library defaults (ADMMSettings.iterations, BPTTSettings.epochs), so that
# the default comparison (the 1,000 N-MNIST recordings, depths 1 2 3 5, 3 seeds, width 128: 36 training runs)
# finishes in under 30 minutes on a 2-core CPU shared with other jobs. ADMM's validation accuracy at depth 1
# is flat after 1-3 iterations; BPTT is still improving after 5 epochs (give --bptt-epochs 20 for its tuned
# default). None would mean: the library default.
COMPARE_ITERATIONS: int | None = 3
COMPARE_BPTT_EPOCHS: int | None = 5


def add_bptt_options(p: argparse.ArgumentParser, epochs_default: int | None = None) -> None:
    from ..baselines.bptt import BPTTSettings
    d = BPTTSettings()
    g = p.add_argument_group("BPTT baseline (snnTorch; see BPTTSettings)")
    g.add_argument("--bptt-epochs", type=int, default=epochs_default or d.epochs, metavar="E",
                   help=f"training epochs; the best validation epoch is kept (default {epochs_default or d.epochs}"
                        + (f"; the library default is {d.epochs})" if epochs_default else ")"))
    g.add_argument("--bptt-lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--bptt-batch-size", type=int, default=d.batch_size, help=f"mini-batch size (default {d.batch_size})")
    g.add_argument("--bptt-weight-decay", type=float, default=d.weight_decay,
                   help=f"Adam weight decay (default {d.weight_decay})")
    g.add_argument("--bptt-surrogate-slope", type=float, default=d.surrogate_slope,
                   help=f"fast-sigmoid surrogate slope (default {d.surrogate_slope})")
    g.add_argument("--bptt-init-scale", type=float, default=d.init_scale,
                   help=f"initial weights U(±s/√fan-in) (default {d.init_scale})")
    g.add_argument("--bptt-init-rate", type=float, default=d.init_rate, metavar="R",
                   help="rescale each hidden layer's initial weights so it fires at rate R (default: off)")


def bptt_settings(args):
    from ..baselines.bptt import BPTTSettings
    return BPTTSettings(epochs=args.bptt_epochs, lr=args.bptt_lr, batch_size=args.bptt_batch_size,
                        weight_decay=args.bptt_weight_decay, surrogate_slope=args.bptt_surrogate_slope,
                        seed=args.seed, init_scale=args.bptt_init_scale, init_rate=args.bptt_init_rate)


def resolve_dataset(args) -> None:
    """--dataset defaults to nmnist when --data-dir is given, else to the bundled digits."""
    if args.dataset is None:
        args.dataset = "nmnist" if args.data_dir else "digits"


def add_parser(subparsers) -> None:
    from ..cli import DEFAULT_HIDDEN, add_admm_options, add_data_options
    p = subparsers.add_parser(
        "compare", help="ADMM vs BPTT vs random-feature floor over depths and seeds",
        description="Train ADMM, the snnTorch BPTT baseline and the floor (random hidden weights + least-squares "
                    "readout) for every depth and seed on one stratified train/validation/test split; write "
                    "results.md (table with the paper's N-MNIST numbers), results.json and PNG plots to --out. "
                    "The dataset is N-MNIST when --data-dir is given, else the bundled digits.")
    add_data_options(p)
    p.set_defaults(dataset=None)
    g = p.add_argument_group("comparison")
    g.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 5], metavar="L",
                   help="numbers of hidden layers to compare (default 1 2 3 5)")
    g.add_argument("--seeds", type=int, default=3, metavar="S",
                   help="seeds per depth and method; seed i uses --seed + i (default 3)")
    g.add_argument("--hidden-width", type=int, default=DEFAULT_HIDDEN, metavar="N",
                   help=f"neurons per hidden layer (default {DEFAULT_HIDDEN})")
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
    add_admm_options(p)
    if COMPARE_ITERATIONS is not None:
        p.set_defaults(iterations=COMPARE_ITERATIONS)
        for a in p._actions:
            if a.dest == "iterations":
                a.help = (f"ADMM iterations (compare default {COMPARE_ITERATIONS}, fewer than the library default "
                          "to fit a 30-minute run)")
    add_bptt_options(p, COMPARE_BPTT_EPOCHS)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import _device, admm_settings, data_options
    from ..compare import CompareConfig, plot_saved_model, run_compare
    resolve_dataset(args)
    data = data_options(args)
    if args.plot_model:
        plot_saved_model(args.plot_model, data, args.plot_sample, args.out)
        return 0
    config = CompareConfig(data=data, admm=admm_settings(args), bptt=bptt_settings(args), depths=args.depths,
                           seeds=args.seeds, hidden_width=args.hidden_width, methods=args.methods,
                           metrics_every=args.metrics_every, device=_device(args.device),
                           plot_sample=args.plot_sample, progress=args.progress)
    run_compare(config, args.out, log=lambda msg: print(msg, flush=True))
    return 0
