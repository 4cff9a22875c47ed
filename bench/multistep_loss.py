#!/usr/bin/env python
"""Prototype, not part of the library: the output loss on K time steps instead of the last one only, measured
with bench/robustness.py (all its options apply; environment variables LOSS_STEPS=K, LOSS_SPAN=F).

Why: trained on N-MNIST, ADMM networks decide at the end of the recording. The accuracy of argmax z_{L,t}
at t = 12 of 30 is about half of BPTT's, and emptying the last 6 frames costs ADMM about 9 points and BPTT
about 2 (bench/robustness.py --cuts 6). The loss ‖z_T − τ‖² reaches the hidden layers through the output
potentials' increments, most strongly near T; a loss at several steps 𝒯 (t = T, T − s, ..., s = F·T/K)
asks for the evidence earlier.

What it runs: solver.parallel_output replaced by an exact block-coordinate scheme for

    (ρ/2)‖D z − W a‖² + Σ_{t∈𝒯} ‖z_t − τ_t‖² + ridge,   τ_t in the hinge's margin set,

alternating τ_t ← proj_M(z_t) (separable, exact) and (W, z) jointly given τ: eliminating z leaves the
generalised least squares min_W Σ (τ − S_𝒯 w)ᵀ Q (τ − S_𝒯 w) with S_t = Σ_{s≤t} δ^{t−s} a_s and
Q = (I + (2/ρ) R Rᵀ)^{-1}, R the rows 𝒯 of D^{-1} (K = 1: Q = ρ/(ρ + 2Σδ^{2(T−t)}), the library's joint
block), then z from (ρ DᵀD + 2 Σ_{t∈𝒯} e_t e_tᵀ) z = ρ Dᵀ W a + 2 Σ_{t∈𝒯} τ_t e_t. Float64, no dual (the
default), dense and conv networks alike. K = 1 runs the library's block unchanged.

    LOSS_STEPS=3 OMP_NUM_THREADS=1 python bench/multistep_loss.py --data-dir ../shared/data/nmnist --depths 1 \
        --seeds 2 --budget-s 60 --split-seed 0 --drops --noises --shifts --bins --methods admm --robust-out runs/ms
"""
import sys, os, json, torch
from admm_snn.admm import solver as S, updates as U
K = int(os.environ.get("LOSS_STEPS", "1"))
orig = S.parallel_output

SPAN = float(os.environ.get("LOSS_SPAN", "1"))
def times(T, K):
    s = SPAN * T / K
    return sorted({T - 1 - round(j * s) for j in range(min(K, T))})

def proto(state, frames, y, settings, cache, generator, start=False, joint=None):
    if K <= 1:
        return orig(state, frames, y, settings, cache, generator, start, joint)
    T = frames.shape[0]; d = settings.delta; rho = settings.output_rho
    tt = times(T, K); k = len(tt)
    f64 = torch.float64
    a = state.layer_inputs(frames, state.n_layers - 1)
    N = a.shape[1]
    # leaky sums at the loss times
    St = torch.empty(k, N, a.shape[2], dtype=f64); s = torch.zeros(N, a.shape[2], dtype=f64); j = 0
    for t in range(T):
        s = d * s + a[t].to(f64)
        if t in tt: St[j] = s; j += 1
    Dinv = torch.tril(d ** (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0).to(f64))
    R = Dinv[tt]
    Q = torch.linalg.inv(torch.eye(k, dtype=f64) + (2.0 / rho) * R @ R.T)
    Lq = torch.linalg.cholesky(Q)
    Sw = torch.einsum("jk,jnf->knf", Lq, St)          # L^T S  (k, N, n)
    G = torch.einsum("knf,kng->fg", Sw, Sw)
    D = torch.eye(T, dtype=f64) - d * torch.diag(torch.ones(T - 1, dtype=f64), -1)
    A = rho * D.T @ D
    for t in tt: A[t, t] += 2.0
    FA = torch.linalg.cholesky(A)
    hinge = settings.output_loss == "hinge"
    yv = y.to(f64)
    if start or not hinge:
        tau = yv.unsqueeze(0).expand(k, -1, -1).clone()
    else:
        W = state.weights[-1].to(f64)
        tau = U.margin_targets(St @ W.T, yv.unsqueeze(0).expand(k, -1, -1), settings.margin)
    rounds = settings.margin_rounds if hinge else 1
    for r in range(rounds):
        C = torch.einsum("jk,jnc->knc", Lq, tau)
        C = torch.einsum("knc,knf->cf", C, Sw)
        W, _ = U.solve_weights(G, C, settings.output_ridge)
        u = a.to(f64) @ W.T
        rhs = rho * torch.einsum("st,snc->tnc", D, u)
        for j, t in enumerate(tt): rhs[t] += 2.0 * tau[j]
        z = torch.cholesky_solve(rhs.reshape(T, -1), FA).reshape(T, N, -1)
        if hinge and r < rounds - 1:
            tau = U.margin_targets(z[tt], yv.unsqueeze(0).expand(k, -1, -1), settings.margin)
    state.weights[-1] = W.to(state.weights[-1].dtype)
    state.potentials[-1].copy_(z.to(state.potentials[-1].dtype))

S.parallel_output = proto
if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import robustness
    sys.exit(robustness.main(sys.argv[1:]))
