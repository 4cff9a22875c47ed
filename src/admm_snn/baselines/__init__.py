"""Baselines that train the same LIF network as ADMM by other means (snnTorch BPTT)."""

from .bptt import BPTTNet, BPTTResult, BPTTSettings, train_bptt

__all__ = ["BPTTNet", "BPTTResult", "BPTTSettings", "train_bptt"]
