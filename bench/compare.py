#!/usr/bin/env python
"""Benchmark script: the same code as ``admm-snn compare`` (all its options apply).

    python bench/compare.py --data-dir ../shared/data/nmnist --depths 1 2 3 5 --seeds 3 --out runs/compare
"""

import sys

from admm_snn.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
