"""Estimate the memory a run needs before it starts, and refuse runs that cannot fit."""

from __future__ import annotations

import torch

from .errors import ResourceError

BYTES = {"float32": 4, "float64": 8, "float16": 2}


def estimate_memory(sizes: list[int], T: int, N: int, settings) -> dict:
    """Bytes needed by a run, by part:

        frames     T·N·n_0 in the state dtype (the trainer converts the frames once)
        state      potentials T·N·Σ_{l≥1} n_l + spikes T·N·Σ_{hidden} n_l + dual N·n_L (state dtype)
        gram       two n×n Gram/factor matrices per layer input plus the weights (gram dtype)
        working    per-chunk temporaries of the updates and the forward simulation: ~8·T·chunk·max(n)
    """
    b = BYTES[settings.dtype]
    g = BYTES[settings.gram_dtype]
    chunk = min(settings.chunk_size or N, N)
    hidden = sizes[1:-1]
    frames = T * N * sizes[0] * b
    state = (T * N * (sum(sizes[1:]) + sum(hidden)) + N * sizes[-1]) * b
    gram = sum(2 * n * n * g + n * m * g for n, m in zip(sizes[:-1], sizes[1:]))
    working = 8 * T * chunk * max(sizes) * b
    total = frames + state + gram + working
    return {"frames": frames, "state": state, "gram": gram, "working": working, "total": total}


def available_memory(device: str) -> int:
    """Free memory on ``device``: MemAvailable from /proc/meminfo on CPU, cudaMemGetInfo on CUDA."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def check_memory(sizes, T, N, settings, device="cpu", log=None) -> dict:
    """Print the estimate (through ``log``) and raise a one-line ResourceError if it cannot fit."""
    est = estimate_memory(sizes, T, N, settings)
    free = available_memory(device)
    if log is not None:
        log(f"memory estimate: {gib(est['total'])} (frames {gib(est['frames'])}, state {gib(est['state'])}, "
            f"gram {gib(est['gram'])}, working {gib(est['working'])}); available {gib(free)}")
    if est["total"] > 0.9 * free:
        raise ResourceError(f"this run needs about {gib(est['total'])} but only {gib(free)} is available on "
                            f"{device}; reduce --time-steps, --chunk-size, the number of samples, or the widths")
    return est
