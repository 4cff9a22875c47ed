"""Measurement helpers shared by the experiments (compare, sweep): peak memory of a call, the forward
evaluation of a split, time-to-accuracy, mean ± std over seeds, the machine and code a run used, and
atomic JSON output.

Memory: :class:`PeakMemory` measures the growth of the process's resident set during a block (sampled
every 5 ms from /proc/self/statm by a background thread, after freed heap memory was returned to the OS
with ``malloc_trim``), so later runs in the same process are measured like the first. Where /proc is
unavailable it falls back to the growth of ``getrusage().ru_maxrss`` (which is 0 for a run that stays
below an earlier peak).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import torch

from ..network import LIFParams, forward, synaptic_operations
from ..heap import release_free_heap

# ----------------------------------------------------------------------------------------------- memory

def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _trim_heap() -> None:
    gc.collect()
    release_free_heap()


class PeakMemory:
    """``with PeakMemory() as m: ...``; then ``m.bytes`` is the growth of the resident set during the block
    (see the module docstring) and ``m.method`` says how it was measured."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.bytes = 0
        self.method = "rss-sampling"

    def _poll(self):
        while not self._stop.wait(self.interval):
            rss = _current_rss()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __enter__(self):
        _trim_heap()
        base = _current_rss()
        if base is None:
            self.method = "ru_maxrss"
            self._base = _max_rss()
            return self
        self._base = self._peak = base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.method == "ru_maxrss":
            self.bytes = max(0, _max_rss() - self._base)
            return False
        self._stop.set()
        self._thread.join()
        rss = _current_rss()
        self._peak = max(self._peak, rss or 0)
        self.bytes = max(0, self._peak - self._base)
        return False


# ------------------------------------------------------------------------------------------- evaluation

def evaluate(weights, frames: torch.Tensor, labels: torch.Tensor, params: LIFParams, chunk: int = 256) -> dict:
    """Forward simulation on a split: accuracy, firing rate of each hidden layer (spikes per neuron per
    time step) and synaptic operations per sample (input events times fan-out, summed over layers)."""
    n = frames.shape[1]
    correct, sops, spikes = 0, 0.0, None
    for s in range(0, n, chunk):
        x = frames[:, s:s + chunk]
        trace = forward(weights, x, params)
        correct += int((trace.output[-1].argmax(1).cpu() == labels[s:s + chunk].cpu()).sum())
        sops += synaptic_operations(weights, x, trace) * x.shape[1]
        r = [float(a.sum()) for a in trace.spikes]
        spikes = r if spikes is None else [u + v for u, v in zip(spikes, r)]
    T = frames.shape[0]
    rates = [s_ / (T * max(n, 1) * w.shape[0]) for s_, w in zip(spikes or [], weights[:-1])]
    return {"accuracy": correct / max(n, 1), "firing_rate": rates, "synaptic_ops": sops / max(n, 1)}


def time_to_fraction(curve: list[tuple[float, float]], reference: float, fraction: float) -> float | None:
    """Training time at the first point of ``curve`` [(seconds, val accuracy)] that reaches
    ``fraction · reference``; None if no point does."""
    for t, acc in curve:
        if acc >= fraction * reference - 1e-12:
            return t
    return None


def mean_std(values: list) -> dict | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals)}



def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        root = Path(__file__).resolve().parents[3]
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
        env["git_subject"] = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
        env["git_dirty_files"] = [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return env



def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_ready(obj), indent=1))
    os.replace(tmp, path)

