"""Experiment code, apart from the library: the comparison of ADMM with BPTT and the random-feature floor
(``admm-snn compare``), grid sweeps of the ADMM penalties (``admm-snn sweep``), the speed benchmark
(``admm-snn bench``), their figures, and the command-line options of these three commands.

The library (network, admm, train, distributed, federated, data, io, baselines, export) never imports
from here; this package uses the library like any other caller.

    common    measurement helpers: peak memory, forward evaluation, time-to-accuracy, run environment
    compare   ADMM vs BPTT vs floor over depths, seeds and a shared wall-clock budget
    sweep     ρ × β (× one more setting) grids by validation accuracy
    bench     seconds per iteration, FLOP rate and peak memory of the solver
    plots     PNG figures of compare and sweep, spike rasters of one sample
    cli       the argparse front end of compare, sweep and bench
"""
