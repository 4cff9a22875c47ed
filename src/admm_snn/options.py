"""The command line's options and how they become the library's records.

Option groups shared by ``admm-snn train``/``eval``/``compare``/``sweep`` and by the distributed launcher
(``python -m admm_snn.launch``), the functions that turn parsed options into :class:`ADMMSettings`,
:class:`DataOptions` and a checked device name, and what the training command and the launcher's workers
share: the summary a run prints (:func:`report_run`) and the checks and inputs of an ``--arch`` run. This module is part of the command-line layer: the
library (network, ADMM engine, ``train``, ``distributed``, ``federated``) never imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import NamedTuple

DEFAULT_HIDDEN = 128
# --loss-steps left out: the output loss at T/3, 2T/3 and T for dense networks on event recordings, whose
# evidence arrives saccade by saccade (docs/results.md, "the end of the recording"), at T alone elsewhere
EVENT_LOSS_STEPS = 3
# admm_snn.data.options.DATASETS, written out so that building the parser does not import the data readers
DATASETS = ["digits", "nmnist", "mnist", "fashion-mnist", "kmnist"]


def add_data_options(p: argparse.ArgumentParser, inherit: bool = False) -> None:
    """The data options shared by train, eval, compare and sweep. With ``inherit`` (eval) an option that
    is not given keeps the value stored in the model, so the same held-out split is rebuilt."""
    g = p.add_argument_group("data" + (" (default: as the model was trained)" if inherit else ""))
    keep = (lambda v: argparse.SUPPRESS) if inherit else (lambda v: v)  # eval: absent = the model's value
    g.add_argument("--dataset", choices=DATASETS, default=keep("digits"),
                   help="digits: scikit-learn's bundled 8x8 digits as spike trains (no download); "
                        "nmnist: N-MNIST event recordings read with tonic; mnist, fashion-mnist, kmnist: the "
                        "IDX files of an MNIST-style download in --data-dir (default: digits)")
    g.add_argument("--data-dir", metavar="ROOT", default=keep(None),
                   help="N-MNIST root with Train/<digit>/*.bin (and Test/...), or the folder with "
                        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] (and t10k-*: the test split)")
    g.add_argument("--download", action="store_true", default=keep(False), help="download N-MNIST with tonic into ROOT if absent")
    g.add_argument("--time-steps", type=int, default=keep(30), metavar="T", help="frames per sample (default 30)")
    g.add_argument("--bin-ms", type=float, default=keep(10.0), metavar="MS", help="N-MNIST frame width in ms (default 10)")
    g.add_argument("--denoise-ms", type=float, default=keep(10.0), metavar="MS",
                   help="tonic Denoise filter time in ms, 0 = off (default 10)")
    g.add_argument("--encoding", choices=["rate", "latency", "current"], default=keep("rate"),
                   help="input code of the image datasets (digits, mnist, ...): rate = a Bernoulli spike per pixel "
                        "and step with probability intensity, latency = one spike, earlier for brighter pixels, "
                        "current = the intensity as a constant input (default rate)")
    g.add_argument("--limit", type=int, metavar="N", default=keep(None),
                   help="use at most N training samples (balanced over classes)")
    g.add_argument("--val-fraction", type=float, default=keep(0.2), metavar="F",
                   help="fraction of training samples held out for validation (default 0.2)")
    g.add_argument("--test-fraction", type=float, default=keep(0.2), metavar="F",
                   help="fraction held out as test set when the data has no test set of its own (no N-MNIST Test "
                        "folder, no t10k files) (default 0.2)")
    g.add_argument("--split-seed", type=int, default=keep(0), help="seed of the stratified splits (default 0)")
    g.add_argument("--cache-dir", metavar="DIR", default=keep(None), help="where framed N-MNIST and encoded image tensors are cached "
                                                      "(default $ADMM_SNN_CACHE or ~/.cache/admm-snn)")


DATA_FIELDS = ["dataset", "data_dir", "download", "time_steps", "bin_ms", "denoise_ms", "encoding", "limit",
               "val_fraction", "test_fraction", "split_seed", "cache_dir"]


def data_options(args, base: dict | None = None):
    """DataOptions from the parsed options, on top of ``base`` (e.g. the options stored in a model)."""
    from .data.options import DataOptions
    values = dict(base or {})
    values.update({k: getattr(args, k) for k in DATA_FIELDS if hasattr(args, k)})
    if not values.get("denoise_ms"):
        values["denoise_ms"] = None
    return DataOptions(**values)


def add_admm_options(p: argparse.ArgumentParser) -> None:
    """Every field of ADMMSettings as an option, documented from its defaults."""
    from .admm.settings import ADMMSettings
    d = ADMMSettings()
    g = p.add_argument_group("ADMM (see ADMMSettings for the meaning of each)")
    g.add_argument("--rho", type=float, default=d.rho, help=f"hidden dynamics penalty ρ (default {d.rho})")
    g.add_argument("--rho-out", type=float, default=d.rho_out,
                   help="output dynamics penalty and dual step ρ_L (default: same as --rho)")
    g.add_argument("--beta", type=float, default=d.beta, help=f"spike-consistency penalty β (default {d.beta})")
    g.add_argument("--delta", type=float, default=d.delta, help=f"membrane leak δ in (0, 1] (default {d.delta})")
    g.add_argument("--theta", type=float, default=d.theta, help=f"firing threshold θ > 0 (default {d.theta})")
    g.add_argument("--eps", type=float, default=d.eps, help=f"Heaviside subroutine ε (default {d.eps})")
    g.add_argument("--iterations", type=int, default=d.iterations, metavar="K",
                   help=f"ADMM iterations (default {d.iterations})")
    g.add_argument("--warmup", type=int, default=d.warmup, metavar="W",
                   help=f"iterations before the first dual update (default {d.warmup})")
    g.add_argument("--schedule", choices=["parallel", "sequential"], default=d.schedule,
                   help=f"update schedule (default {d.schedule})")
    g.add_argument("--order", choices=["top-down", "paper"], default=d.order,
                   help=f"block order: top-down (layers from the top, states then W) or paper (random layer "
                        f"order, W first) (default {d.order})")
    g.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="paper: the spec's method as published (uniform start, β=1, clipped spikes, sequential "
                        "order, dual on, no re-projection/extrapolation); explicit options override it")
    g.add_argument("--ridge", type=float, default=d.ridge,
                   help=f"relative ridge (or proximal weight) of the hidden weight solves (default {d.ridge})")
    g.add_argument("--ridge-out", type=float, default=d.ridge_out,
                   help=f"relative ridge of the output solve (default {d.ridge_out})")
    g.add_argument("--proximal", action=argparse.BooleanOptionalAction, default=d.proximal,
                   help=f"hidden weights: proximal term ‖W − W_prev‖² instead of the ridge ‖W‖² (default {d.proximal})")
    g.add_argument("--step-rule", choices=["fixed", "relative"], default=d.step_rule,
                   help=f"fixed: hidden weights move to W_prev + η (W* − W_prev); relative: the same "
                        f"direction with length η·‖W_prev‖ in every layer (default {d.step_rule})")
    g.add_argument("--weight-step", type=float, default=d.weight_step, metavar="ETA",
                   help=f"η of --step-rule; fixed 1 = exact block minimiser (default {d.weight_step:g})")
    g.add_argument("--momentum", type=float, default=d.momentum, metavar="MU",
                   help=f"heavy-ball momentum μ in [0, 1) of the hidden weight step, 0 = off (default {d.momentum:g})")
    g.add_argument("--dual", action=argparse.BooleanOptionalAction, default=d.dual,
                   help=f"update the dual λ of the exact output constraint after the warm-up (default {d.dual})")
    g.add_argument("--spike-solver", choices=["clip", "box", "free"], default=d.spike_solver,
                   help=f"spike block: solve then clip (paper), exact box QP, or unclipped (default {d.spike_solver})")
    g.add_argument("--output-solve", choices=["joint", "potentials", "sweep"], default=d.output_solve,
                   help=f"output block update (default {d.output_solve})")
    g.add_argument("--output-loss", choices=["square", "hinge"], default=d.output_loss,
                   help=f"output loss: square (‖z_T − y‖², the paper) or hinge (squared hinge through free "
                        f"targets in the margin set) (default {d.output_loss})")
    g.add_argument("--margin", type=float, default=d.margin, help=f"hinge margin of the true class (default {d.margin:g})")
    g.add_argument("--loss-steps", type=int, default=None, metavar="K",
                   help=f"put the output loss on K time steps spread over the frames and ending at T (T = 30, K = 3: "
                        f"t = 10, 20, 30) instead of T alone; the prediction stays argmax z_T (default "
                        f"{EVENT_LOSS_STEPS} for dense networks on N-MNIST, {d.loss_steps} otherwise)")
    g.add_argument("--margin-rounds", type=int, default=d.margin_rounds, metavar="R",
                   help=f"hinge: rounds of target / readout block minimisation per output block (default {d.margin_rounds})")
    g.add_argument("--target-gate", type=float, default=d.target_gate, metavar="K",
                   help=f"gate the hidden weight targets by 1/(1 + K|z − θ|)² of the forward potentials, "
                        f"0 = off (default {d.target_gate:g}; a heuristic, see ADMMSettings)")
    g.add_argument("--init", choices=["forward", "uniform"], default=d.init,
                   help=f"initial state (default {d.init}; uniform is the paper's)")
    g.add_argument("--init-gain", type=float, default=d.init_gain, help=f"initial weight scale (default {d.init_gain})")
    g.add_argument("--init-rate", type=float, default=d.init_rate, metavar="R",
                   help=f"rescale each hidden layer's initial weights so it fires at rate R on the training data "
                        f"(default {d.init_rate}; the init gain is then only the starting scale)")
    g.add_argument("--deep-init", choices=["random", "identity"], default=d.deep_init,
                   help=f"hidden layers after the first start random or as near-identity copies of the layer "
                        f"below (layer-by-layer growth) (default {d.deep_init})")
    g.add_argument("--identity-gain", type=float, default=d.identity_gain, metavar="G",
                   help=f"diagonal of an identity layer, in units of θ (default {d.identity_gain})")
    g.add_argument("--identity-noise", type=float, default=d.identity_noise, metavar="S",
                   help=f"random part of an identity layer, relative to 1/sqrt(fan-in) (default {d.identity_noise})")
    g.add_argument("--l1", type=float, default=d.l1, metavar="L1",
                   help=f"relative L1 penalty on the weights through the split W = V (V exactly sparse, "
                        f"threshold l1/l1-penalty); 0 = off (default {d.l1:g})")
    g.add_argument("--l1-penalty", type=float, default=d.l1_penalty, metavar="KAPPA",
                   help=f"relative penalty κ of the L1 split W = V (default {d.l1_penalty:g})")
    g.add_argument("--l1-output", action=argparse.BooleanOptionalAction, default=d.l1_output,
                   help=f"put the output layer under the L1 split too (default {d.l1_output})")
    g.add_argument("--rate-penalty", type=float, default=d.rate_penalty, metavar="GAMMA",
                   help=f"firing-rate penalty γ per hidden spike added to the Lagrangian; "
                        f"0 = off (default {d.rate_penalty:g})")
    g.add_argument("--penalty-balance", choices=["off", "rho", "beta", "both"], default=d.penalty_balance,
                   help=f"residual balancing of the per-layer hidden penalties ρ_l, β_l (Boyd §3.4.1) "
                        f"(default {d.penalty_balance})")
    g.add_argument("--balance-mu", type=float, default=d.balance_mu, metavar="MU",
                   help=f"balancing: change a penalty when one residual exceeds MU times the other (default {d.balance_mu:g})")
    g.add_argument("--balance-tau", type=float, default=d.balance_tau, metavar="TAU",
                   help=f"balancing: the factor of each change (default {d.balance_tau:g})")
    g.add_argument("--balance-tolerance", type=float, default=d.balance_tolerance, metavar="F",
                   help=f"balancing: apply a new penalty only once it differs by this factor (default {d.balance_tolerance:g})")
    g.add_argument("--rho-growth", type=float, default=d.rho_growth, metavar="G",
                   help=f"continuation: multiply every hidden ρ_l by G each iteration (default {d.rho_growth:g}: off)")
    g.add_argument("--beta-growth", type=float, default=d.beta_growth, metavar="G",
                   help=f"continuation: multiply every β_l by G each iteration (default {d.beta_growth:g}: off)")
    g.add_argument("--rho-decay", type=float, default=d.rho_decay, metavar="G",
                   help=f"hidden layer l of n gets the dynamics penalty ρ·G^(n-1-l): the top hidden layer ρ, "
                        f"each one below G times the one above, so the output's signal reaches the first "
                        f"layers of deep networks (default {d.rho_decay:g})")
    g.add_argument("--penalty-cap", type=float, default=d.penalty_cap, metavar="C",
                   help=f"balancing and continuation keep ρ_l, β_l within a factor C of --rho, --beta "
                        f"(default {d.penalty_cap:g})")
    g.add_argument("--anderson", type=int, default=d.anderson, metavar="M",
                   help=f"safeguarded Anderson acceleration of the hidden weights with memory M, 0 = off "
                        f"(default {d.anderson})")
    g.add_argument("--grow-every", type=int, default=d.grow_every, metavar="K",
                   help="layer-by-layer growth: train the first hidden layer alone for K iterations, then the "
                        f"first two, ... (layers above keep their identity start) (default {d.grow_every}; 0 = off)")
    g.add_argument("--reproject", type=int, default=d.reproject, metavar="K",
                   help=f"re-project hidden states onto the forward simulation every K iterations, 0 = never "
                        f"(default {d.reproject})")
    g.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype, help=f"state dtype (default {d.dtype})")
    g.add_argument("--gram-dtype", choices=["float32", "float64"], default=d.gram_dtype,
                   help=f"dtype of Gram sums and solves (default {d.gram_dtype})")
    g.add_argument("--cross-dtype", choices=["float32", "float64"], default=d.cross_dtype,
                   help="dtype of each time step's product in the cross sums Σ x aᵀ, added in the gram dtype "
                        "(default: the state dtype)")
    g.add_argument("--input-format", choices=["auto", "dense", "sparse"], default=d.input_format,
                   help="products with the input frames from their sparse (CSR) form: auto = when at most "
                        f"10%% of frame entries are nonzero (default {d.input_format})")
    g.add_argument("--chunk-size", type=int, default=d.chunk_size, metavar="N",
                   help="samples per chunk in per-sample updates (default: all)")
    g.add_argument("--seed", type=int, default=d.seed, help=f"seed of every random choice (default {d.seed})")


def _given_options(argv: list[str]) -> set[str]:
    """Names (dest form) of the options written on the command line."""
    out = set()
    for a in argv:
        if a.startswith("--"):
            name = a[2:].split("=")[0]
            out.add((name[3:] if name.startswith("no-") else name).replace("-", "_"))
    return out


def default_loss_steps(args, values: dict) -> int:
    """The ``loss_steps`` of a command whose --loss-steps was left out: EVENT_LOSS_STEPS for dense networks
    on N-MNIST (not --arch, --federated or --preset paper, and only with the settings it needs: the joint
    output block, no dual, no L1 split of the output), 1 otherwise."""
    from .admm.settings import ADMMSettings
    if (getattr(args, "dataset", None) != "nmnist" or getattr(args, "arch", None) is not None
            or getattr(args, "federated", False) or getattr(args, "preset", "default") == "paper"):
        return 1
    allowed = ADMMSettings(**{**values, "loss_steps": 1}).loss_steps_conflict() is None
    return EVENT_LOSS_STEPS if allowed else 1


def admm_settings(args):
    """ADMMSettings from the options; with --preset paper, the paper's values for every option that
    was not given explicitly. --loss-steps above 1 with --federated is a one-line SettingsError."""
    from .admm.settings import ADMMSettings
    names = {f.name for f in dataclasses.fields(ADMMSettings)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if getattr(args, "preset", "default") == "paper":
        given = _given_options(getattr(args, "argv", None) or sys.argv[1:])
        paper = ADMMSettings.paper().to_dict()
        values = {k: (v if k in given else paper[k]) for k, v in values.items()}
    if values.get("loss_steps", 0) is None:
        values["loss_steps"] = default_loss_steps(args, values)
    if values.get("loss_steps", 1) > 1 and getattr(args, "federated", False):
        from .errors import SettingsError
        raise SettingsError(f"--loss-steps {values['loss_steps']} is not supported with --federated (the "
                            "consensus readout has the loss at T); leave it out")
    return ADMMSettings(**values)


def add_training_options(p: argparse.ArgumentParser, distributed: bool = False) -> None:
    """The network, ADMM and run options of a training command: ``admm-snn train`` and the workers of
    ``python -m admm_snn.launch`` (``distributed``: --out is written by rank 0, each rank uses
    cuda:LOCAL_RANK, and checkpoints/resume are accepted but refused at run time)."""
    p.add_argument("--hidden", type=int, action="append", metavar="N",
                   help=f"width of a hidden layer; repeat for more layers (default: one of {DEFAULT_HIDDEN})")
    add_admm_options(p)
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", default="runs/latest",
                   help="output folder: model.safetensors, metrics.jsonl, summary.json (default runs/latest)"
                        + ("; written by rank 0" if distributed else ""))
    g.add_argument("--device", default="cpu",
                   help="cpu or cuda " + ("(each rank uses cuda:LOCAL_RANK)" if distributed else "(default cpu)"))
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help=argparse.SUPPRESS if distributed else
                   "write the full training state every K iterations (0 = only at the end)")
    g.add_argument("--resume", action="store_true",
                   help=argparse.SUPPRESS if distributed else "continue the run in --out from its checkpoint")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_report_options(g)
    a = p.add_argument_group("augmentation")
    a.add_argument("--augment-shift", type=int, default=None, metavar="S",
                   help="shift augmentation: at every re-projection the training samples' frames move by new "
                        "random offsets in [-S, S]^2 pixels (zero fill), seeded by --seed (default: 1 on sensors of "
                        "at least 16x16 pixels such as MNIST and N-MNIST, 0 on smaller ones; 0: off; --preset paper "
                        "and federated runs do not augment; --arch runs do)")
    a.add_argument("--augment-groups", type=int, default=16, metavar="K",
                   help="with --augment-shift: the samples form K fixed random groups that move together (a new "
                        "offset per group and draw), so each draw's input Gram is summed from the K groups' Grams "
                        "instead of formed anew (default 16; 0: one offset per sample, the Gram formed from every draw)")



def add_arch_options(p: argparse.ArgumentParser) -> None:
    """--arch and --budget-s: ``admm-snn train`` and the workers of ``python -m admm_snn.launch``."""
    p.add_argument("--arch", metavar="SPEC", default=None,
                   help="train a convolutional network instead of a dense one, e.g. 12c5-p2-32c5-p2-128 (12 "
                        "channels of 5x5 kernels, 2x2 sum pooling, 32 channels of 5x5, 2x2 pooling, a dense "
                        "layer of 128; the output layer follows) on the dataset's (C, H, W) frames; not with "
                        "--hidden, --federated or --report-samples; with --nproc N (or torchrun) data-parallel, "
                        "without checkpoints (--checkpoint-every, --resume); shift augmentation (--augment-shift, "
                        "--augment-groups) as for dense networks")
    p.add_argument("--budget-s", type=float, default=None, metavar="S",
                   help="stop once the training compute (initialisation and iterations, without the report) has "
                        "reached S seconds, after the iteration that reached it (default: no budget; not with --nproc "
                        "for dense networks; with --arch --nproc the slowest process's seconds count)")
    p.add_argument("--conv-spike-solve", choices=["auto", "direct", "cg"], default="auto",
                   help="--arch: how the spikes of a layer below a convolution are solved: direct (exact, a Cholesky "
                        "factor of the pooled image's (C*H*W)^2 matrix), cg (conjugate gradients to a relative "
                        "residual of 1e-4) or auto (default: direct where it costs fewer flops than 10 CG "
                        "iterations and the pooled image has at most 4096 numbers)")


def augment_shift(args) -> int | None:
    """The shift augmentation of a training command: --augment-shift; None where it is left out (the
    default then follows the sensor: :func:`admm_snn.data.augment.default_shift`), 0 with --preset paper
    (the paper's method) and for federated runs, which do not augment. A given shift with --federated, a
    negative one or a negative --augment-groups is a one-line SettingsError."""
    from .errors import SettingsError
    given = getattr(args, "augment_shift", None)
    federated = bool(getattr(args, "federated", False))
    if given is not None and given < 0:
        raise SettingsError(f"--augment-shift must be 0 (off) or a number of pixels >= 1, got {given}")
    if getattr(args, "augment_groups", 0) < 0:
        raise SettingsError(f"--augment-groups must be 0 (one offset per sample) or a positive count, "
                            f"got {args.augment_groups}")
    if federated and given:
        raise SettingsError("--augment-shift is for single-process and data-parallel runs; leave it out with "
                            "--federated")
    if given is None and (federated or getattr(args, "preset", "default") == "paper"):
        return 0
    return None if given is None else int(given)


def shift_resampler(shift: int | None, args, frames, sensor_shape, seed: int):
    """The training command's augmentation over ``frames``: a ShiftResampler of ``shift`` pixels (None:
    :func:`admm_snn.data.augment.default_shift` of the sensor) with --augment-groups, or None when the
    shift is 0. ``shift`` is what :func:`augment_shift` returned (checked before any data is loaded)."""
    from .data.augment import ShiftResampler, default_shift
    shift = default_shift(sensor_shape) if shift is None else shift
    if not shift:
        return None
    return ShiftResampler(frames, sensor_shape, shift, seed, groups=args.augment_groups)


# train.REPORT_SAMPLES, train.VAL_SAMPLES, written out so that building the parser does not import torch
REPORT_SAMPLES, VAL_SAMPLES = 2000, 10000


def add_report_options(g) -> None:
    """The bounds of the per-iteration report (train, the distributed workers, compare, sweep)."""
    g.add_argument("--report-samples", type=int, default=None, metavar="N",
                   help="measure the training accuracy, firing rates, residuals and Lagrangian of the per-iteration "
                        "report on a fixed random subsample of N training samples, 0 = all (default: a tenth of "
                        f"the training samples, at least 100, at most {REPORT_SAMPLES})")
    g.add_argument("--val-samples", type=int, default=VAL_SAMPLES, metavar="N",
                   help="measure the validation accuracy (which picks the returned iteration) on at most N "
                        f"validation samples, a fixed random subsample of a larger split, 0 = all (default {VAL_SAMPLES})")


def add_distributed_options(p: argparse.ArgumentParser, nproc_default: int = 1) -> None:
    """The options of a distributed or federated run (also usable from ``admm-snn train``)."""
    from .distributed import DEFAULT_TIMEOUT_S
    g = p.add_argument_group("distributed / federated")
    g.add_argument("--nproc", type=int, default=nproc_default, metavar="N",
                   help="start N local processes (Gloo on CPU) without torchrun (default 1); with --federated, "
                        "N clients")
    g.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                   help="torch.distributed backend (default: nccl for --device cuda, else gloo)")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds a process waits for the others (rendezvous and every all-reduce) before it "
                        f"stops with an error (default {DEFAULT_TIMEOUT_S:g})")
    g.add_argument("--federated", action="store_true",
                   help="consensus ADMM over the weights: every process is a client that shares only its "
                        "weights (see admm_snn.federated)")
    g.add_argument("--partition", choices=["iid", "classes", "dirichlet"], default="iid",
                   help="federated split of the training data over the clients (default iid)")
    g.add_argument("--non-iid", action="store_true", help="shorthand for --partition classes")
    g.add_argument("--dirichlet-alpha", type=float, default=0.5, metavar="A",
                   help="concentration of the Dirichlet label skew (default 0.5)")
    g.add_argument("--consensus", type=float, default=None, metavar="C",
                   help="federated consensus penalty, relative to each client's Gram scale (default: "
                        "admm_snn.federated.DEFAULT_CONSENSUS)")
    g.add_argument("--local-iterations", type=int, default=1, metavar="E",
                   help="local ADMM iterations per federated round (default 1)")
    g.add_argument("--block-rounds", type=int, default=None, metavar="R",
                   help="federated: solve every weight block across the clients by up to R consensus rounds "
                        "inside the sweep (default: admm_snn.federated.DEFAULT_BLOCK_ROUNDS; 0 = one consensus "
                        "round per iteration)")
    g.add_argument("--block-tol", type=float, default=None, metavar="TOL",
                   help="federated: stop a block's rounds when the consensus weights change by less than TOL "
                        "relative (default: admm_snn.federated.DEFAULT_BLOCK_TOL)")


# ----------------------------------------------------------------------------------------------------
# Training commands: the report, and the parts of an --arch run shared by admm-snn train and the launcher
# ----------------------------------------------------------------------------------------------------

def report_run(args, result, wall: float, has_val: bool, splits, device, accuracy) -> int:
    """The training command's summary line (and the test accuracy, added to summary.json when the data has
    a test split); ``accuracy(frames, labels)`` → (accuracy, per-layer firing rates) of the trained network."""
    last = result.history[-1] if result.history else {}
    summary = {"best_iteration": result.best_iteration, "iterations": result.iterations, "status": result.status,
               "wall_s": round(wall, 2), "train_accuracy": last.get("train_accuracy"), "val_accuracy": None}
    if has_val:
        summary["val_accuracy"] = next((h["val_accuracy"] for h in result.history
                                        if h["iteration"] == result.best_iteration), None)
    if splits.test is not None:
        acc, rates = accuracy(splits.test.time_major(device=device), splits.test.labels.to(device))
        summary["test_accuracy"] = acc
        summary["test_firing_rate"] = rates
        path = Path(args.out) / "summary.json"
        full = json.loads(path.read_text())
        full.update({"test_accuracy": acc, "test_firing_rate": rates, "split": splits.info})
        from .io import atomic_write_text
        atomic_write_text(path, json.dumps(full, indent=2))
    print(json.dumps(summary))
    if "test_accuracy" in summary:
        print(f"test accuracy: {summary['test_accuracy']:.4f}")
    return 0


def refuse_with_arch(args) -> None:
    """A one-line SettingsError for an option ``--arch`` runs do not support, naming the option."""
    import os
    from .errors import SettingsError
    parallel = max(args.nproc, int(os.environ.get("WORLD_SIZE", "1"))) > 1
    no_checkpoints = "data-parallel convolutional runs do not checkpoint; train in one process to checkpoint and resume"
    refused = [("--hidden", bool(args.hidden), "--arch names every hidden layer (e.g. --arch 12c5-p2-128)"),
               ("--federated", bool(args.federated), "federated training is implemented for dense networks only "
                                                    "(--nproc N without --federated trains --arch data-parallel)"),
               ("--resume with --nproc or torchrun", parallel and bool(args.resume), no_checkpoints),
               ("--checkpoint-every with --nproc or torchrun", parallel and bool(args.checkpoint_every),
                no_checkpoints),
               ("--report-samples", args.report_samples is not None,
                "--arch reports the training accuracy on every training sample")]
    for name, bad, reason in refused:
        if bad:
            raise SettingsError(f"{name} is not supported with --arch: {reason}; leave it out")


def check_conv_options(args) -> tuple[int | None, str]:
    """The checks of ``admm-snn train --arch`` that need no data, each a one-line SettingsError: the refused
    options (:func:`refuse_with_arch`), the architecture string, --augment-shift, --budget-s,
    --val-samples and --device. Returns (the shift of :func:`augment_shift`, the device)."""
    from .arch import parse_arch
    from .errors import SettingsError
    refuse_with_arch(args)
    shift = augment_shift(args)
    parse_arch(args.arch)  # a bad string fails before any data is read
    if args.budget_s is not None and not (0 < args.budget_s < float("inf")):
        raise SettingsError(f"--budget-s must be a finite number of seconds > 0, got {args.budget_s}")
    if args.val_samples is not None and args.val_samples < 0:
        raise SettingsError(f"--val-samples must be 0 (all) or a positive count, got {args.val_samples}")
    return shift, check_device(args.device)


class ConvInputs(NamedTuple):
    """What an --arch run trains on: the (C, H, W) ``shape``, the training frames ``X`` (time-major,
    compact dtype kept), ``val`` (frames, labels: at most --val-samples of the validation split, or None),
    the shift augmentation ``resample`` (or None) and the ``extra`` record of the model file."""
    shape: tuple
    X: object
    val: tuple | None
    resample: object
    extra: dict


def conv_inputs(args, splits, settings, shift, device: str, show: bool = True, processes: int = 1) -> ConvInputs:
    """The inputs of an --arch run from its data splits; a network that does not fit the frames is a
    one-line error; with ``show`` the data line is printed (naming ``processes`` when more than one)."""
    from .conv_network import output_shapes
    from .train import VAL_SEED, report_indices
    shape = tuple(splits.train.sensor_shape)
    units = output_shapes(args.arch, shape, splits.train.n_classes)  # a network that does not fit: one line
    if show:
        print(f"data: {splits.info['n_train']} train, {splits.info['n_val']} val, {splits.info['n_test']} test "
              f"({splits.info['test_source']}); network {args.arch} on {'x'.join(map(str, shape))} "
              f"-> {' -> '.join('x'.join(map(str, u)) for u in units)}"
              + (f"; {processes} processes" if processes > 1 else ""), flush=True)
    val = None
    if splits.val is not None:
        v, vl = splits.val.time_major(dtype=splits.val.frames.dtype), splits.val.labels
        idx = report_indices(v.shape[1], args.val_samples, VAL_SEED)
        if idx is not None:
            v, vl = v[:, idx], vl[idx]
        val = (v.to(device), vl.to(device))
    X = splits.train.time_major(dtype=splits.train.frames.dtype).to(device)
    resample = shift_resampler(shift, args, X, shape, settings.seed)
    extra = {"data": splits.info["data"], "test_source": splits.info["test_source"],
             "augment": {"shift": resample.max_shift, "groups": resample.groups} if resample is not None else None}
    return ConvInputs(shape, X, val, resample, extra)


def conv_progress(settings, show: bool):
    """(bar, on_record): a progress bar over the iterations updated by every history entry after the
    start, or (None, None) without ``show``."""
    if not show:
        return None, None
    from tqdm.auto import tqdm
    bar = tqdm(total=settings.iterations, desc="admm conv", dynamic_ncols=True)

    def progress(m):
        if m["iteration"] > 0:
            bar.set_postfix({k[:5]: round(m[k], 3) for k in ("train_accuracy", "val_accuracy") if k in m},
                            refresh=False)
            bar.update(1)
    return bar, progress


def report_conv(args, result, wall: float, inputs: ConvInputs, splits, device, settings) -> int:
    """:func:`report_run` of an --arch run: the summary line, and the test accuracy of the saved (best
    validation) weights added to summary.json."""
    from .conv_network import accuracy_and_rates
    return report_run(args, result, wall, inputs.val is not None, splits, device,
                      lambda frames, labels: accuracy_and_rates(args.arch, inputs.shape, result.best_weights, frames,
                                                                labels, settings.lif))


def check_device(name: str) -> str:
    """``name`` if it is ``cpu`` or an available ``cuda[:N]``; else a one-line SettingsError."""
    import torch
    from .errors import SettingsError
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise SettingsError(f"--device {name!r} is not cpu or cuda[:N]")
    return name
