"""Estimate the memory a run needs before it starts, and refuse runs that cannot fit."""

from __future__ import annotations

import torch

from .arch import size
from .errors import ResourceError

BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "uint8": 1, "int8": 1, "bool": 1}


def _frame_bytes(frames_dtype, state_bytes: int) -> int:
    if frames_dtype is None:
        return state_bytes
    name = str(frames_dtype).replace("torch.", "")
    if name not in BYTES:
        raise ValueError(f"frames_dtype={frames_dtype!r} is not one of {', '.join(BYTES)}")
    return BYTES[name]


def estimate_memory(sizes: list[int], T: int, N: int, settings, frames_dtype=None, device="cpu",
                    density: float | None = None, group_grams: int = 0) -> dict:
    """Bytes needed by a run of the ADMM solver, by part (b = bytes of the state dtype, g = of the gram
    dtype, f = of the stored frames, B = samples per block of the per-sample updates, K = T·B, n = the
    widest hidden/output layer):

        frames     T·N·n_0·f; f is the frames' dtype (``frames_dtype``: 1 for uint8 spike frames; None:
                   the state dtype, as when the frames are converted once before training)
        state      potentials T·N·Σ_{l≥1} n_l + spikes T·N·Σ_{hidden} n_l + dual and one-hot targets
                   2·N·n_L (state dtype)
        gram       the input layer's Gram matrix and its Cholesky factor (2·n_0²·g, kept for the run;
                   4.5·n_0²·g while they are formed in the first iteration: the float32 accumulator and
                   the mirrored copy of admm/gram.py, and the ridged copy that is factorised), the largest other Gram with its factor (2·n²·g,
                   one layer at a time), the spike systems and their factors (4·n²·b) and the weights;
                   with grouped shift augmentation the ``group_grams`` groups' input Grams
                   (group_grams·n_0²·g, data/augment.py)
        working    one block's inputs converted for dense products u = W a (K·n_0·b, unless the frames
                   are already in the state dtype; at least the 4·K·n_0 bytes of the float32 copy that
                   the exact input Gram's dense kernel forms) and, in the gram dtype, for the weight sums, kept between
                   iterations on CPU; the block's temporaries of the spike, potential and weight updates
                   (about 4·K·n·b + K·n·g); without chunking and with re-projection,
                   the hidden layers' input currents kept for the next sweep (T·N·Σ_{hidden} n_l·b)
        sparse     when the products with the frames use their CSR form (``input_format``; "auto" at a
                   ``density`` of nonzero entries ≤ 0.1): nnz = density·T·N·n_0 entries, each held
                   twice (the frames and their transpose) with a 4-byte column index, its stored value
                   (f) and its value in the product's dtype (b, or the cross dtype's bytes), plus row
                   pointers, times :data:`SPARSE_HEAP_FACTOR` (reported within ``frames``)

    B is ``settings.chunk_size`` (None: N), and on CPU at most a cache-sized block (see
    :func:`admm_snn.admm.solver.block_size`), so the working part is small unless the run is on an
    accelerator without chunking. Compared with the peak resident memory (VmHWM) of real runs minus the
    interpreter's own (``admm-snn bench`` reports both; init_rate unset; estimate vs measured, default
    sparse input products, T=30): 0.39 vs 0.34 GiB (N=1000, 2312-128-10), 3.13 vs 2.67 GiB (N=16000,
    2312-128-10), 15.49 vs 13.69 GiB (N=60000, 2312-512-10, uint8 frames, chunk_size 2000, 2 threads).
    With one whole-N block, as on an accelerator (N=2000, 2312-512-10, measured on CPU with the block
    caps lifted): 2.11 vs 1.84 GiB dense, 2.00 vs 1.38 GiB sparse. On an H200 (CUDA
    max_memory_allocated, no chunking): 54.1 vs 34.4 GiB sparse and 57.4 vs 37.6 GiB dense at N=60000,
    2312-512-10; 4.0 vs 2.6 GiB at N=4000 (conservative there by about 1.5x). Not included: the data-driven initial scale (init_rate), which
    converts all frames at once in admm_snn.admm.state.calibrate_rates."""
    from .admm.solver import block_size
    b = BYTES[settings.dtype]
    g = BYTES[settings.gram_dtype]
    f = _frame_bytes(frames_dtype, b)
    n0 = sizes[0]
    hidden = sizes[1:-1]
    n = max(sizes[1:])
    K = T * block_size(N, T, n, settings, device, max(sizes[:-1]))
    frames = T * N * n0 * f
    state = (T * N * (sum(sizes[1:]) + sum(hidden)) + 2 * N * sizes[-1]) * b
    others = max(sizes[1:-1] or [0])
    weights = sum(m * k for m, k in zip(sizes[:-1], sizes[1:]))
    gram = int(4.5 * n0 * n0 * g) + 2 * others * others * g + 4 * n * n * b + weights * (b + g) \
        + int(group_grams) * n0 * n0 * g
    # the block's inputs in the state dtype (input products and, by default, the cross sums' products)
    # and, in one reused buffer, in the gram dtype: the hidden layers' inputs for their Grams, and the
    # frames too when the cross products are in the gram dtype
    if settings.cross_product_dtype == settings.gram_dtype:
        gram_conv = K * n0 * (g if f != g else 0)
    else:
        gram_conv = K * max(hidden or [0]) * (g if b != g else 0)
    sparse = sparse_bytes(T, N, n0, settings, f, density)
    # the frames converted for dense input products, or (first iteration) the float32 copy of the exact
    # input Gram's dense kernel, whichever is larger; the sparse products convert nothing
    conversions = (0 if sparse else max(K * n0 * (b if f != b else 0), 4 * K * n0)) + gram_conv
    temporaries = 4 * K * n * b + K * n * g
    reproject = getattr(settings, "reproject", 0)
    kept = T * N * sum(hidden) * b if (reproject and (not settings.chunk_size or settings.chunk_size >= N)) else 0
    working = conversions + temporaries + kept
    frames += sparse
    total = frames + state + gram + working
    return {"frames": frames, "state": state, "gram": gram, "working": working, "sparse": sparse, "total": total}


def sparse_bytes(T: int, N: int, n0: int, settings, frame_bytes: int, density: float | None = None) -> int:
    """Bytes of the frames' CSR form (see :func:`estimate_memory`), 0 when the run uses dense products.
    With ``input_format="sparse"`` and no ``density``, every entry is counted as nonzero."""
    from .admm.sparse_inputs import uses_sparse
    if not uses_sparse(settings, density):
        return 0
    nnz = (1.0 if density is None else density) * T * N * n0
    b, c = BYTES[settings.dtype], BYTES[settings.cross_product_dtype]
    kept = nnz * (2 * 4 + 2 * frame_bytes + b + c) + 2 * T * N * 4
    return int(SPARSE_HEAP_FACTOR * kept)


SPARSE_HEAP_FACTOR = 1.8
"""Resident memory of the CSR form per byte of its kept arrays: building it block by block and the
products' temporaries leave freed heap between the kept arrays (N-MNIST-density frames, 2312-512-10,
T=30, measured peak minus the dense run's: 149 MB for 84 MB kept at N=2000, 1.8x at N=4000)."""


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


def check_memory(sizes, T, N, settings, device="cpu", log=None, frames_dtype=None, density=None,
                 group_grams: int = 0) -> dict:
    """Print the estimate (through ``log``) and raise a one-line ResourceError if it cannot fit."""
    est = estimate_memory(sizes, T, N, settings, frames_dtype, device, density, group_grams)
    free = available_memory(device)
    if log is not None:
        log(f"memory estimate: {gib(est['total'])} (frames {gib(est['frames'])}, state {gib(est['state'])}, "
            f"gram {gib(est['gram'])}, working {gib(est['working'])}); available {gib(free)}")
    if est["total"] > 0.9 * free:
        hints = []
        c = min(settings.chunk_size or N, N)
        if est["working"] > 0.1 * est["total"]:
            hints.append(f"a smaller --chunk-size (now {c} samples; the working part, {gib(est['working'])}, "
                         "scales with it)")
        if frames_dtype is None or _frame_bytes(frames_dtype, 1) > 1:
            hints.append(f"frames stored as uint8 (now {gib(est['frames'])})")
        hints.append("fewer --time-steps, fewer samples (--limit) or narrower --hidden layers (the state, "
                     f"{gib(est['state'])}, scales with T·N·width)")
        raise ResourceError(f"this run needs about {gib(est['total'])} (frames {gib(est['frames'])}, state "
                            f"{gib(est['state'])}, working {gib(est['working'])}) but only {gib(free)} is "
                            f"available on {device}; reduce it with " + "; ".join(hints))
    return est


def estimate_conv_memory(problem, T: int, N: int, settings, frames_dtype=None, device="cpu") -> dict:
    """Bytes needed by a run of the convolutional solver (``conv_solver``), by part (b = bytes of the
    state dtype, g = of the gram dtype, f = of the stored frames, R = T·N images, n_l the neurons of
    layer l, n = the widest hidden layer; the conv solver does not chunk over samples):

        frames     R·n_0·f, and the frames converted to the state dtype for the first layer's products
                   (R·n_0·b) when they are stored in another dtype
        state      potentials R·Σ_{l≥1} n_l + spikes R·Σ_{hidden} n_l + dual and targets 2·N·n_L (b)
        working    the sweep's per-layer tensors for the widest layer (its currents, the gated targets'
                   copies of its forward spikes and potentials, the targets, the spike block's
                   right-hand side, d and h, the solution: 8·R·n·b) and the re-projection's new trace
                   of every hidden layer (R·2·Σ_{hidden} n_l·b)
        gram       per layer the weight block's Gram and factor (2·m²·g, m = C_in·k² or the pooled
                   inputs) and the spike block's matrices: 4·k²·g through Woodbury's identity below a
                   narrower layer (updates.low_rank), 4·n_l²·b for the n×n matrices and factors otherwise;
                   below a conv layer solved directly (conv.spike_solve_method) CᵀC, its two factors and a
                   temporary (4·p²·8, p = the pooled image's numbers) and the float64 right-hand sides and
                   solutions of the pooled systems (2·R·p·8)
    """
    from .admm.updates import low_rank
    b = BYTES[settings.dtype]
    g = BYTES[settings.gram_dtype]
    f = _frame_bytes(frames_dtype, b)
    net = problem.net
    sizes = problem.sizes
    R = T * N
    hidden = sizes[1:-1]
    frames = R * sizes[0] * f + (R * sizes[0] * b if f != b else 0)
    state = R * (sum(sizes[1:]) + sum(hidden)) * b + 2 * N * sizes[-1] * b
    working = 8 * R * max(hidden, default=0) * b + 2 * R * sum(hidden) * b
    gram = 0
    for l, layer in enumerate(net):
        m = layer.in_shape[0] * layer.kernel ** 2 if layer.kind == "conv" else size(layer.pooled_shape)
        gram += 2 * m * m * g
        if l + 1 < len(net):
            n, k = layer.n_out, net[l + 1].n_out
            low = net[l + 1].kind == "dense" and low_rank((k, n), settings.beta, settings.spike_solver)
            gram += 4 * k * k * g if low else (0 if net[l + 1].kind == "conv" else 4 * n * n * b)
            if net[l + 1].kind == "conv" and problem.spike_method(l) == "direct":
                p = size(net[l + 1].pooled_shape)
                gram += 4 * p * p * 8 + 2 * R * p * 8
    total = frames + state + working + gram
    return {"frames": frames, "state": state, "working": working, "gram": gram, "total": total}


def check_conv_memory(problem, T: int, N: int, settings, device="cpu", log=None, frames_dtype=None) -> dict:
    """:func:`estimate_conv_memory`, printed through ``log``; a one-line ResourceError if it cannot fit."""
    est = estimate_conv_memory(problem, T, N, settings, frames_dtype, device)
    free = available_memory(device)
    if log is not None:
        log(f"memory estimate: {gib(est['total'])} (frames {gib(est['frames'])}, state {gib(est['state'])}, "
            f"gram {gib(est['gram'])}, working {gib(est['working'])}); available {gib(free)}")
    if est["total"] > 0.9 * free:
        raise ResourceError(f"this convolutional run needs about {gib(est['total'])} (frames {gib(est['frames'])}, "
                            f"state {gib(est['state'])}, working {gib(est['working'])}) but only {gib(free)} is "
                            f"available on {device}; the state and the working part scale with T·N·(neurons per "
                            "layer): use fewer samples (--limit), fewer --time-steps, fewer channels or a larger "
                            "stride or pooling in --arch")
    return est
