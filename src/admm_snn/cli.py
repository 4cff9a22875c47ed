"""Command line: ``admm-snn train | eval | compare | sweep | bench | export``.

Every problem a user can cause ends in one line on stderr (``admm-snn: error: ...``) and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import AdmmSnnError

# The option groups and their conversion into records live in options.py (shared with the launcher of
# multi-process runs, launch.py); they are re-exported here for the command modules.
from .options import (DATA_FIELDS, DEFAULT_HIDDEN, add_admm_options, add_arch_options,  # noqa: F401
                      add_data_options, add_distributed_options, add_training_options, admm_settings, augment_shift,
                      check_conv_options, check_device, conv_inputs, conv_progress, data_options, report_conv,
                      report_run, shift_resampler)

_device = check_device  # the name the command modules import

# The experiment commands (compare, sweep, bench) live in admm_snn.experiments, apart from the library;
# their module registers them with add_parsers(subparsers).
EXPERIMENT_COMMANDS = "admm_snn.experiments.cli"


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network with ADMM",
                       description="Train a feed-forward LIF network with ADMM. With no arguments: the bundled "
                                   "digits, one hidden layer of 128, the default settings.")
    add_data_options(p)
    add_training_options(p)
    add_arch_options(p)  # --arch --budget-s
    add_distributed_options(p)  # --nproc --backend --timeout --federated --partition --non-iid ...
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import os
    if getattr(args, "arch", None) is not None:
        return cmd_train_conv(args)
    if getattr(args, "conv_spike_solve", "auto") != "auto":
        from .errors import SettingsError
        raise SettingsError("--conv-spike-solve is for convolutional networks (--arch); leave it out")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: this process is one rank
        from .launch import run_worker
        return run_worker(args)
    if (args.nproc > 1 or args.federated) and args.budget_s is not None:
        from .errors import SettingsError
        raise SettingsError("--budget-s is for single-process runs; leave it out with --nproc or --federated")
    shift = augment_shift(args)
    if args.nproc > 1 or args.federated:
        from .launch import launch_local, worker_argv
        return launch_local(args.nproc, worker_argv(args))
    from .data.options import load_splits
    from .train import train, accuracy_and_rates
    device = check_device(args.device)
    settings = admm_settings(args)
    opts = data_options(args)
    splits = load_splits(opts)
    hidden = args.hidden or [DEFAULT_HIDDEN]
    # binary frames stay uint8 (exact and 4x smaller); the solver converts them one chunk at a time
    val = (splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels) if splits.val is not None else None
    print(f"data: {splits.info['n_train']} train, {splits.info['n_val']} val, {splits.info['n_test']} test "
          f"({splits.info['test_source']}); network {[splits.train.n_inputs, *hidden, splits.train.n_classes]}")
    X = splits.train.time_major(dtype=splits.train.frames.dtype)
    resample = shift_resampler(shift, args, X, splits.train.sensor_shape, settings.seed)
    result = train(X, splits.train.labels, hidden, settings,
                   n_classes=splits.train.n_classes, val=val, out=args.out,
                   checkpoint_every=args.checkpoint_every or settings.iterations, resume=args.resume,
                   progress=not args.quiet, device=device,
                   model_extra={"data": splits.info["data"], "test_source": splits.info["test_source"],
                                "augment": {"shift": resample.max_shift, "groups": resample.groups}
                                if resample is not None else None},
                   report_samples=args.report_samples, val_samples=args.val_samples, budget_s=args.budget_s,
                   resample=resample)
    return report_run(args, result, result.wall_s, val is not None, splits, device,
                      lambda frames, labels: accuracy_and_rates([w.to(device) for w in result.weights], frames,
                                                                labels, settings.lif))


def cmd_train_conv(args) -> int:
    """``admm-snn train --arch SPEC``: a convolutional network by conv_train.train_conv on the dataset's
    (C, H, W) frames; the validation split picks the saved weights, the test split is reported. With
    --nproc N (or under torchrun) data-parallel: the options are checked here, then every process runs
    :func:`launch.run_conv_worker` (distributed_conv.train_distributed_conv)."""
    import os
    import time
    from .conv_train import train_conv
    from .data.options import load_splits
    shift, device = check_conv_options(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: this process is one rank
        from .launch import run_worker
        return run_worker(args)
    if args.nproc > 1:  # N local processes of python -m admm_snn.launch
        from .launch import launch_local, worker_argv
        return launch_local(args.nproc, worker_argv(args))
    settings = admm_settings(args)
    splits = load_splits(data_options(args))
    inputs = conv_inputs(args, splits, settings, shift, device)
    bar, progress = conv_progress(settings, show=not args.quiet)
    t0 = time.perf_counter()
    try:
        result = train_conv(inputs.X, splits.train.labels.to(device), args.arch, inputs.shape, settings, args.out,
                            n_classes=splits.train.n_classes, val=inputs.val, budget_s=args.budget_s,
                            model_extra=inputs.extra, on_record=progress, log=None if args.quiet else print,
                            checkpoint_every=args.checkpoint_every or settings.iterations, resume=bool(args.resume),
                            resample=inputs.resample, spike_solve=args.conv_spike_solve)
    finally:
        if bar is not None:
            bar.close()
    return report_conv(args, result, time.perf_counter() - t0, inputs, splits, device, settings)


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model by forward simulation",
                       description="Simulate a trained network on a split and report accuracy and firing rate. "
                                   "Data options default to those the model was trained with.")
    p.add_argument("--model", required=True, metavar="DIR", help="folder (or file) written by 'admm-snn train'")
    add_data_options(p, inherit=True)
    p.add_argument("--split", choices=["train", "val", "test"], default="test", help="which split (default test)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import torch
    from .data.options import load_splits
    from .io import load_model
    from .network import LIFParams, forward, synaptic_operations
    from .train import accuracy_and_rates
    device = check_device(args.device)
    model = load_model(Path(args.model))
    opts = data_options(args, base=model["extra"].get("data"))
    splits = load_splits(opts, need_test=args.split == "test")
    ds = {"train": splits.train, "val": splits.val, "test": splits.test}[args.split]
    if ds is None:
        from .errors import DataError
        raise DataError(f"split {args.split!r} is empty with these data options")
    if model.get("arch"):
        return _eval_conv(args, model, ds, device)
    if ds.n_inputs != model["sizes"][0]:
        from .errors import CheckpointError
        raise CheckpointError(f"{args.model} expects {model['sizes'][0]} inputs but the data has {ds.n_inputs}; "
                              "it is from another dataset")
    params = LIFParams(model["delta"], model["theta"])
    weights = [w.to(device) for w in model["weights"]]
    frames = ds.time_major(device=device)
    acc, rates = accuracy_and_rates(weights, frames, ds.labels.to(device), params)
    trace = forward(weights, frames[:, :512], params)
    sops = synaptic_operations(weights, frames[:, :512], trace)
    overall = sum(r * w.shape[0] for r, w in zip(rates, weights[:-1])) / max(sum(w.shape[0] for w in weights[:-1]), 1)
    report = {"accuracy": acc, "n_samples": len(ds), "firing_rate": overall, "firing_rate_per_layer": rates,
              "synaptic_ops_per_sample": sops, "split": args.split, "sizes": model["sizes"]}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.split} accuracy: {acc:.4f} on {len(ds)} samples; firing rate {overall:.4f}")
    return 0


def _eval_conv(args, model, ds, device) -> int:
    """``admm-snn eval`` of a convolutional model: accuracy and firing rates of conv_network's forward
    simulation on the split, after checking that its (C, H, W) frames are the model's input shape."""
    from .conv_network import accuracy_and_rates
    from .errors import CheckpointError
    from .network import LIFParams
    shape = tuple(model["input_shape"])
    if tuple(ds.sensor_shape) != shape:
        raise CheckpointError(f"{args.model} expects inputs of shape {'x'.join(map(str, shape))} but the data's are "
                              f"{'x'.join(map(str, ds.sensor_shape))}; it is from another dataset")
    if ds.n_classes != model["sizes"][-1]:
        raise CheckpointError(f"{args.model} has {model['sizes'][-1]} outputs but the data has {ds.n_classes} "
                              "classes; it is from another dataset")
    params = LIFParams(model["delta"], model["theta"])
    weights = [w.to(device) for w in model["weights"]]
    acc, rates = accuracy_and_rates(model["arch"], shape, weights, ds.time_major(device=device),
                                    ds.labels.to(device), params)
    units = model["sizes"][1:-1]
    overall = sum(r * n for r, n in zip(rates, units)) / max(sum(units), 1)
    report = {"accuracy": acc, "n_samples": len(ds), "firing_rate": overall, "firing_rate_per_layer": rates,
              "synaptic_ops_per_sample": None, "split": args.split, "sizes": model["sizes"],
              "arch": model["arch"], "input_shape": list(shape)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.split} accuracy: {acc:.4f} on {len(ds)} samples; firing rate {overall:.4f}")
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a trained model (NIR)",
        description="Write a model trained by 'admm-snn train' as a NIR graph (input -> Linear -> LIF -> ... -> "
                    "Linear -> leaky output; a convolutional model: input (C, H, W) -> [SumPool2d] -> Conv2d -> "
                    "LIF -> ... -> Flatten -> Linear -> ...). NIR's LIF resets to v_reset while admm-snn subtracts the "
                    "threshold; the graph records this in node metadata, and admm_snn.export.import_snntorch "
                    "loads it into snnTorch with the exact admm-snn dynamics (see admm_snn.export).")
    p.add_argument("--model", required=True, metavar="DIR", help="folder (or model.safetensors) written by train")
    p.add_argument("--format", choices=["nir"], default="nir", help="output format (default nir)")
    p.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                   help="real time of one network step, sets NIR's tau = dt/(1-delta) and r = tau/dt "
                        "(default: the model's N-MNIST frame width, else 1e-3)")
    p.add_argument("out", metavar="OUT.nir", help="file to write")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .export import export_model
    report = export_model(args.model, args.out, args.format, args.dt)
    print(json.dumps(report))
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (subparsers inherit the class)."""

    def error(self, message):
        sys.stderr.write(f"admm-snn: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="admm-snn", description="Train spiking neural networks with ADMM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub)
    add_eval_parser(sub)
    importlib.import_module(EXPERIMENT_COMMANDS).add_parsers(sub)  # compare, sweep, bench
    add_export_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        if args.command is None:
            args = parser.parse_args(["train"])
            args.argv = ["train"]
        else:
            parser.print_help()
            return 2
    try:
        return int(args.func(args) or 0)
    except AdmmSnnError as exc:
        print(f"admm-snn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("admm-snn: interrupted; the last checkpoint in the output folder is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
