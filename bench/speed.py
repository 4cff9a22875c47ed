#!/usr/bin/env python
"""Speed benchmark of the ADMM solver: seconds per iteration of the parallel and sequential schedules,
FLOP rate against the machine's measured float32 matrix-product rate, peak memory; writes bench.md,
bench.json and bench.png into --out. The same as ``admm-snn bench`` (see admm_snn.experiments.bench).

    python bench/speed.py --n 1000 4000 16000 --hidden 128 --out bench-out
"""

import sys

from admm_snn.experiments.cli import bench_main as main

if __name__ == "__main__":
    sys.exit(main())
