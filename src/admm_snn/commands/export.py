"""``admm-snn export --model DIR --format nir OUT.nir``: write a trained network as a NIR graph."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained model (NIR)",
        description="Write a model trained by 'admm-snn train' as a NIR graph (input -> Linear -> LIF -> ... -> "
                    "Linear -> leaky output). NIR's LIF resets to v_reset while admm-snn subtracts the "
                    "threshold; the graph records this in node metadata, and admm_snn.export.import_snntorch "
                    "loads it into snnTorch with the exact admm-snn dynamics (see admm_snn.export).")
    p.add_argument("--model", required=True, metavar="DIR", help="folder (or model.safetensors) written by train")
    p.add_argument("--format", choices=["nir"], default="nir", help="output format (default nir)")
    p.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                   help="real time of one network step, sets NIR's tau = dt/(1-delta) and r = tau/dt "
                        "(default: the model's N-MNIST frame width, else 1e-3)")
    p.add_argument("out", metavar="OUT.nir", help="file to write")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_model
    report = export_model(args.model, args.out, args.format, args.dt)
    print(json.dumps(report))
    return 0
