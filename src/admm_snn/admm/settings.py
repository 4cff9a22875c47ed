"""The one settings record of the ADMM trainer, with documented defaults (OSQP style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import SettingsError
from ..network import LIFParams

SCHEDULES = ("parallel", "sequential")
ORDERS = ("top-down", "paper")
INITS = ("forward", "uniform")
DEEP_INITS = ("random", "identity")
SPIKE_SOLVERS = ("clip", "box", "free")
OUTPUT_SOLVES = ("joint", "potentials", "sweep")
OUTPUT_LOSSES = ("square", "hinge")
DTYPES = ("float32", "float64")
INPUT_FORMATS = ("auto", "dense", "sparse")
STEP_RULES = ("fixed", "relative")
PENALTY_BALANCES = ("off", "rho", "beta", "both")


@dataclass(frozen=True)
class ADMMSettings:
    """Every setting of an ADMM run.

    Penalties and neurons
      rho        ρ > 0, penalty on violated membrane dynamics of the hidden layers.
      rho_out    penalty on violated output dynamics and the dual step size (None: the same as rho).
                 The paper uses one ρ; a larger output penalty keeps the output an exact integrator of
                 the hidden spikes, so the output error reaches the hidden layers instead of being
                 absorbed by slack in the output dynamics.
      beta       β > 0, penalty on spikes that disagree with the threshold of their potential.
      delta      δ in (0, 1], membrane leak of every layer.
      theta      θ > 0, firing threshold (soft reset subtracts θ).
      eps        ε > 0, how far above θ the Heaviside subroutine puts a potential that should spike.
    Iterations
      iterations number of ADMM iterations (the validation split keeps the best one). 45: with the
                 relative weight step of 5% per iteration 12 were too few; on N-MNIST (599 training
                 recordings, 3 split seeds × 2 seeds) held-out accuracy 87.0 after 12, 88.6 after 30;
                 split seeds 0-2 × 2 seeds, 30 → 45: 88.6 → 89.2 with the loss at T, 89.5 → 89.8
                 with the loss on 3 steps, 5 of 12 runs higher and one lower (docs/results.md
                 "Iterations"); about 65 s there, one thread.
      dual       update the dual λ of the exact output constraint (the paper). Off by default: with
                 re-projection the accumulated λ makes the readout interpolate the training set
                 (measured on N-MNIST: validation 0.84 → 0.69 over 10 iterations).
      warmup     the dual λ is not updated during the first ``warmup`` iterations.
      schedule   how a hidden layer's states are visited: "parallel" (default: all t of its spikes in
                 one solve, potentials red-black in time) or "sequential" (the paper's: one t at a time,
                 random order of t = 1..T-1, t = T last, spikes then potential at each t).
      order      the order of the blocks in one iteration: "top-down" (default: hidden layers from the
                 top down, each layer's states then its weights W_l; the output block is fitted at the
                 start too) or "paper" (hidden layers in random order, W_l first, then the states).
    Linear algebra
      ridge      relative ridge added to every Gram matrix: G + ridge·(tr G / n)·I. It regularises the
                 weights (a weight decay (ρ/2)·ridge·(tr G/n)·‖W‖²) and keeps Cholesky stable.
      ridge_out  relative ridge of the output layer's solve (None: the same as ridge).
      proximal   hidden weight updates minimise (ρμ/2)‖W − W_prev‖² instead of the ridge (ρμ/2)‖W‖²:
                 the weights move towards the least-squares fit without shrinking to zero each time.
      step_rule  after each sweep of the hidden layers (every block exact), the hidden weights are moved:
                 "fixed": to W_prev + η (W* − W_prev) with W* the block minimiser
                 and η = weight_step (1: exact; larger values extrapolate along the update direction);
                 "relative": the same direction, with a length of weight_step · ‖W_prev‖ in every
                 layer (scale-free, so one value serves every depth).
      weight_step η of step_rule (relative step length for "relative").
      momentum   μ in [0, 1): heavy-ball momentum of the hidden weight step, v ← μ v + (g(W) − W),
                 W ← W + v (the velocity v is part of the state and of checkpoints; 0: off). Default
                 0.5 with weight_step 0.05 (was 0.03 without momentum): the same accuracy in fewer
                 iterations (docs/results.md "Step length and momentum", bench/explore.py): MNIST
                 5,000 images, 784-128-10, best validation in 20 iterations 0.934 → 0.9435; 18,000
                 images, 784-512-10: 0.9675 at iteration 15 where the old step needs 25 for 0.967.
      spike_solver "clip" (the paper: ridge solve then clip to [0, 1]), "box" (the exact minimiser
                 over [0, 1]^n, by projected accelerated gradient started from the clipped solve) or
                 "free" (the exact minimiser with spikes relaxed to all reals: no clipping).
      box_iterations iterations of the box solver.
      output_solve how the output block (W_L, z_L) is updated by the parallel schedule:
                 "joint": the exact joint minimiser over W_L and all z_{L,t} (a ridge regression of
                 y + λ/ρ on the leaky sums of the hidden spikes, then one T×T solve for the potentials);
                 "potentials": W_L by least squares (spec step 1), then all z_{L,t} in one T×T solve;
                 "sweep": W_L, then z_{L,t} red-black with the spec's step 4 formulas.
      dtype      dtype of the per-sample state ("float32" or "float64").
      gram_dtype dtype in which Gram sums Σ a aᵀ and Σ x aᵀ are accumulated and solved.
      cross_dtype dtype of each time step's product x_tᵀ a_t in the cross sums C = Σ_t x_t a_tᵀ, which
                 are added over t, chunks and processes in gram_dtype. None (default): the state dtype.
                 With float32 state the targets x are float32 and the inputs binary, so float32
                 products summed in float64 stay within float32 rounding of one time step's sum, at a
                 third of the float64 product's CPU cost (the Gram G, whose factor needs it, stays in
                 gram_dtype). "float64": C as exact as G (a 2-process run then equals a 1-process run
                 up to float64 rounding, which the float32 weights absorb: bit for bit in every
                 measurement with equal threads per process; with float32 products the runs differ by
                 a few percent after 5 iterations, as do 1-process runs on different thread counts:
                 docs/performance-and-determinism.md).
      input_format products with the input frames (the first layer's currents W_1 a_0 and cross sums
                 Σ x_1 a_0ᵀ): "auto" (default) from a compressed sparse row form of the frames when
                 at most 10% of the frame entries are nonzero (N-MNIST: 3.5%), "sparse" always,
                 "dense" never (admm_snn.admm.sparse_inputs; the same results up to the order of the
                 additions).
      chunk_size samples processed at once in per-sample updates (None: all). Bounds working memory.
    Output loss
      output_loss "square" (the paper: ‖z_{L,T} − y‖² with y one-hot) or "hinge" (default): the loss
                 ‖z_{L,T} − τ‖² with targets τ as one more block, free in the margin set
                 {τ_y ≥ margin, τ_c ≤ 0 for c ≠ y}; minimising over τ leaves the squared hinge
                 Σ max(0, margin − z_y)² + Σ_{c≠y} max(0, z_c)², which stops pulling on outputs that are
                 already on the right side, so the readout and the hidden layers' targets work on the
                 samples that are still wrong. Measured (bench/learning.py, means of 3 seeds): MNIST
                 5,000 images, 784-128-10, best validation 0.879 → 0.905; N-MNIST 1,000 recordings,
                 best validation 0.888 → 0.916, test 0.834 → 0.856.
      loss_steps K ≥ 1: the output loss on K time steps 𝒯 spread evenly over the T frames and ending
                 at T (updates.loss_times; T = 30, K = 3: t = 10, 20, 30), Σ_{t∈𝒯} ‖z_{L,t} − τ_t‖² with
                 τ_t in the margin set (hinge) or y (square), instead of the last step alone (K = 1).
                 The prediction stays argmax z_{L,T}; the loss at earlier steps asks the hidden layers
                 for evidence before the end of the recording. The output block stays exact: rounds of
                 τ_t ← proj(z_t) and (W_L, z_L) jointly given τ (a generalised least squares,
                 updates.loss_weighting). Needs output_solve="joint" and no dual, L1 split of the
                 output or federated consensus. Default 1 here; the command line (options.
                 default_loss_steps) uses 3 for dense networks on N-MNIST, where it was level as
                 recorded and 6-8 points more robust to timing changes and shifts (docs/results.md).
      margin_rounds rounds, per output block, of τ ← proj(W_L S) (the exact minimiser given the
                 readout) and the joint (W_L, z_L) solve given τ: block coordinate descent of the
                 readout's squared-hinge ridge regression, warm-started from the previous readout (at
                 the start from τ = y); the last τ is the output block's target.
    Hidden weight targets
      target_gate k ≥ 0 (0: off): the hidden weight block's targets become
                 x = u + θ·prev(g ⊙ (a − a_fwd)), u = W_l a_{l-1} the forward currents, a the spike
                 block's spikes, a_fwd and z_fwd the forward spikes and potentials the sweep started
                 from, g = 1 / (1 + k|z_fwd − θ|)² (the fast-sigmoid shape of surrogate-gradient
                 methods): the weight step pushes the currents of neurons near their threshold, where a
                 change of the weights changes spikes, instead of every neuron alike. The weight block
                 stays the exact (proximal) least-squares minimiser for these targets, but the targets
                 are no longer the Lagrangian's x of the states (a heuristic; the paper preset and the
                 exactness tests turn it off). Default 5 (bench/learning.py, means of 3 seeds): MNIST
                 5,000 images best validation 0.905 → 0.931; N-MNIST 0.916 → 0.932, test 0.856 → 0.869.
    Start
      init       "forward": random weights (scaled so that hidden layers fire), states from the forward
                 simulation of that network; "uniform": the paper's W = 0, z and a uniform in [0, 1).
      init_gain  scale of the random initial weights relative to 1/sqrt(fan-in) (init="forward").
      init_rate  if set, each hidden layer's initial weights are rescaled (bottom up, by bisection)
                 so that its mean firing rate on the training data is this value (init="forward").
      deep_init  hidden layers after the first (init="forward"): "random" (drawn and rate-calibrated
                 like the first) or "identity": W_l = identity_gain·I (+ a small random part), so
                 each layer copies the spike train of the layer below and the deep network starts as
                 the one-layer network (layer-by-layer growth with every layer inserted at once).
                 Needs equal widths for an exact copy (wider layers get the identity on the first
                 neurons, narrower ones keep the first inputs). Default "identity": on N-MNIST (3
                 iterations, 3 seeds, bench/ablation.py, without growth) best validation 0.865 / 0.856
                 at 3 / 5 layers against 0.840 / 0.790 with random deep layers.
      identity_gain the diagonal of an identity layer in units of θ. With δ = 0.95 and subtract reset
                 1.05-1.1 copies the spike train of the layer below exactly and 1.0 loses spikes to the
                 leak (tests/test_depth.py).
      identity_noise standard deviation of a random part added to an identity layer, relative to
                 1/sqrt(fan-in) (0: none, the exact copy).
      grow_every layer-by-layer growth: K > 0 trains only the first hidden layer for K iterations, then
                 the first two, ... (a layer above the trained ones keeps its start weights: with
                 deep_init="identity" it copies the layer below, so the network computes what the
                 trained shallow network computes, and each new layer is inserted at the identity);
                 0: every layer is trained from the start. While the layers above the grown ones
                 are exact copies (solver.copies_exactly) an iteration runs on the grown layers and
                 the output only, at their cost (solver.iterate). Growth against none: on N-MNIST
                 (3 iterations, 3 seeds, bench/ablation.py, K = 2) best validation 0.873 / 0.871 at
                 3 / 5 layers against 0.865 / 0.856 when every layer trains from the start. Default
                 8: MNIST 13,620 images, 120 s budget, test accuracy at 3 / 5 / 7 layers 97.1 / 97.1
                 / 97.1 (validation 97.4) against 96.6 / 96.4 / 96.4 with K = 4 and 96.0 / 95.7 / 95.4
                 with K = 2 (1 layer: 96.8; one seed; at K = 8 every deep network has grown 3 layers
                 in that time; docs/compare.md).
                 Dense networks only: a convolutional network starts every layer at random (no
                 identity copies to grow from) and trains them all from the first iteration.
      reproject  every K iterations, after the hidden layers' updates and before the output block,
                 replace the hidden states (z, a) by the forward simulation of the current weights
                 (0: never). Keeps the relaxed states on the real network, so the readout is fitted to
                 the spikes the network really emits.
    Adaptive penalties and acceleration (admm/penalties.py, admm/anderson.py; all off by default)
      penalty_balance residual balancing of the per-layer hidden penalties (Boyd et al. §3.4.1):
                 "off", "rho", "beta" or "both". ρ_l ← τρ_l when the dynamics residual of layer l
                 exceeds μ times its dual residual (the change of its states), ρ_l/τ in the opposite
                 case; β_l likewise from the spike-consistency residuals. The output ρ is never adapted.
      balance_mu μ > 1 of the balancing rule.
      balance_tau τ > 1 of the balancing rule.
      balance_tolerance ≥ 1: an applied penalty follows its balanced target only when they differ by
                 this factor or more (the blocks' matrices change only for a large change).
      rho_growth continuation: every hidden ρ_l is multiplied by this (≥ 1) every iteration.
      beta_growth continuation: every β_l is multiplied by this (≥ 1) every iteration.
      rho_decay  γ in (0, 1]: the dynamics penalty of hidden layer l (0-based, of n hidden layers) is
                 ρ_l = ρ·γ^(n−1−l): the top hidden layer keeps ρ, each layer below it γ times the one
                 above. The spike block of layer l weighs the next layer's constraint (ρ_{l+1}‖W_{l+1}‖²)
                 against its own reset term (ρ_l θ²); with one ρ an identity layer passes on about half
                 of a change of the targets above it, so through six layers of a 7-layer network the
                 output's signal reaches the first layer at about 1/64 of its size. γ < 1 lets it
                 through (every block stays the exact minimiser of the Lagrangian with these ρ_l;
                 one-layer networks are unchanged). 1: one ρ for every layer (the paper's). Default
                 0.3: MNIST 5,000 images, 7 hidden layers, 10 iterations, best validation 0.9265 → 0.9375
                 (the 1-layer network: 0.937); N-MNIST 3 / 5 layers unchanged within noise.
      penalty_cap ≥ 1: balancing and continuation keep ρ_l and β_l within a factor penalty_cap of
                 their start (ρ·rho_decay^(n−1−l) and beta; continuation stops at that start·penalty_cap).
      anderson   memory m of safeguarded type-II Anderson acceleration of the hidden weights
                 (0: off); an accelerated point that raises the residual ‖T(x) − x‖ of the ADMM map
                 is rejected for the plain step.
    Sparsity for energy (admm/sparsity.py; all off by default)
      l1         relative L1 penalty on the weights, through a split W_l = V_l (V_l carries the L1 norm,
                 U_l is the scaled dual): λ1_l‖V_l‖₁ with λ1_l = ρ_l·l1·s_l, s_l = tr(G_l)/n of the
                 layer's Gram matrix (relative like the ridge; frozen at the first split update). V is
                 the exactly sparse copy of W (soft-thresholded at τ = l1/l1_penalty in weight units).
                 0: no split (the default: on N-MNIST it trades accuracy for density no better than
                 magnitude pruning of the trained weights; README "Sparsity for energy").
      l1_penalty κ of the split, relative in the same way: κ_l = ρ_l·l1_penalty·s_l (> 0). With exact
                 weight blocks the W-block gains (κ/2)‖W − V + U‖²; with a step rule (the default)
                 the split is its own block after the step, W ← (1 − c) W + c (V − U) with
                 c = l1_penalty/(ridge + l1_penalty). Default 10 = the hidden ridge: c = 1/2.
      l1_output  put the output layer's weights under the split too (default: hidden layers only).
      rate_penalty γ ≥ 0: adds γ·Σ a_{l,t} over hidden spikes (every sample, t and neuron) to the
                 Lagrangian; linear in the spikes, so the spike block stays exact (its right-hand
                 side shifts by −γ) in both schedules. 0: off (the default).
      seed       fixes every random choice (initial state, update orders).
    """

    rho: float = 1.0
    rho_out: float | None = None
    beta: float = 0.001
    delta: float = 0.95
    theta: float = 1.0
    eps: float = 1e-5
    iterations: int = 45
    dual: bool = False
    warmup: int = 5
    schedule: str = "parallel"
    order: str = "top-down"
    ridge: float = 10.0
    ridge_out: float | None = 0.1
    proximal: bool = True
    step_rule: str = "relative"
    weight_step: float = 0.05
    spike_solver: str = "free"
    box_iterations: int = 50
    output_solve: str = "joint"
    dtype: str = "float32"
    gram_dtype: str = "float64"
    cross_dtype: str | None = None
    input_format: str = "auto"
    chunk_size: int | None = None
    init: str = "forward"
    init_gain: float = 3.0
    init_rate: float | None = 0.08
    deep_init: str = "identity"
    identity_gain: float = 1.1
    identity_noise: float = 0.0
    grow_every: int = 8
    penalty_balance: str = "off"
    balance_mu: float = 10.0
    balance_tau: float = 2.0
    balance_tolerance: float = 2.0
    rho_growth: float = 1.0
    beta_growth: float = 1.0
    penalty_cap: float = 1000.0
    rho_decay: float = 0.3
    anderson: int = 0
    reproject: int = 1
    l1: float = 0.0
    l1_penalty: float = 10.0
    l1_output: bool = False
    rate_penalty: float = 0.0
    seed: int = 0
    output_loss: str = "hinge"
    margin: float = 1.0
    margin_rounds: int = 10
    loss_steps: int = 1
    target_gate: float = 5.0
    momentum: float = 0.5

    def __post_init__(self):
        LIFParams(self.delta, self.theta)  # validates δ and θ
        positive = {"rho": self.rho, "rho_out": self.output_rho, "beta": self.beta, "eps": self.eps,
                    "init_gain": self.init_gain, "weight_step": self.weight_step,
                    "identity_gain": self.identity_gain, "l1_penalty": self.l1_penalty}
        for name, value in positive.items():
            if not (value > 0) or value != value or value == float("inf"):
                raise SettingsError(f"{name}={value} must be a finite number > 0")
        for name in ("identity_noise", "l1", "rate_penalty"):
            value = getattr(self, name)
            if not (value >= 0) or value == float("inf"):
                raise SettingsError(f"{name}={value} must be a finite number >= 0")
        if not isinstance(self.l1_output, bool):
            raise SettingsError(f"l1_output={self.l1_output!r} must be true or false")
        for name in ("ridge", "ridge_out"):
            value = getattr(self, name)
            if value is not None and (not (value >= 0) or value == float("inf")):
                raise SettingsError(f"{name}={value} must be a finite number >= 0")
        for name in ("balance_mu", "balance_tau", "balance_tolerance", "rho_growth", "beta_growth", "penalty_cap"):
            value, strict = getattr(self, name), name in ("balance_mu", "balance_tau")
            if not (value > 1 if strict else value >= 1) or value == float("inf"):
                raise SettingsError(f"{name}={value} must be a finite number {'>' if strict else '>='} 1")
        if not (0 < self.rho_decay <= 1):
            raise SettingsError(f"rho_decay={self.rho_decay} must be a number in (0, 1]")
        if not (self.margin > 0) or self.margin == float("inf"):
            raise SettingsError(f"margin={self.margin} must be a finite number > 0")
        if not (0 <= self.momentum < 1):
            raise SettingsError(f"momentum={self.momentum} must be a number in [0, 1)")
        if not (self.target_gate >= 0) or self.target_gate == float("inf"):
            raise SettingsError(f"target_gate={self.target_gate} must be a finite number >= 0")
        if not isinstance(self.margin_rounds, int) or self.margin_rounds < 1:
            raise SettingsError(f"margin_rounds={self.margin_rounds!r} must be an integer >= 1")
        if isinstance(self.loss_steps, bool) or not isinstance(self.loss_steps, int) or self.loss_steps < 1:
            raise SettingsError(f"loss_steps={self.loss_steps!r} must be an integer >= 1")
        conflict = self.loss_steps_conflict() if self.loss_steps > 1 else None
        if conflict is not None:
            name, need = conflict
            raise SettingsError(f"loss_steps={self.loss_steps} needs {name}={need}, not {getattr(self, name)!r}")
        for name in ("iterations", "warmup", "reproject", "box_iterations", "anderson", "grow_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise SettingsError(f"{name}={value!r} must be an integer >= 0")
        if self.init_rate is not None and not (0.0 < self.init_rate < 1.0):
            raise SettingsError(f"init_rate={self.init_rate} must be in (0, 1) or unset")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise SettingsError(f"chunk_size={self.chunk_size!r} must be a positive integer or None")
        for name, allowed in (("step_rule", STEP_RULES), ("schedule", SCHEDULES), ("order", ORDERS), ("init", INITS), ("deep_init", DEEP_INITS),
                              ("spike_solver", SPIKE_SOLVERS), ("penalty_balance", PENALTY_BALANCES),
                              ("output_solve", OUTPUT_SOLVES), ("output_loss", OUTPUT_LOSSES), ("dtype", DTYPES), ("gram_dtype", DTYPES),
                              ("input_format", INPUT_FORMATS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.cross_dtype is not None and self.cross_dtype not in DTYPES:
            raise SettingsError(f"cross_dtype={self.cross_dtype!r} is not one of {', '.join(DTYPES)} or None")

    @classmethod
    def paper(cls, **changes) -> "ADMMSettings":
        """The paper's method as written in the spec: W = 0 and uniform states, β = 1, one ρ, clipped
        spikes, plain ridge least squares, no re-projection, no extrapolation, the sequential schedule
        in the paper's order and the spec's output sweep; the cross sums in float64 (the reference
        precision: its threshold flips amplify any rounding difference, e.g. between 1 and 2 processes)."""
        base = dict(beta=1.0, rho_out=None, ridge=1e-6, ridge_out=None, proximal=False, weight_step=1.0,
                    step_rule="fixed", spike_solver="clip", reproject=0, init="uniform",
                    schedule="sequential", order="paper", output_solve="sweep", dual=True, warmup=5,
                    iterations=30, cross_dtype="float64", output_loss="square", target_gate=0.0,
                    momentum=0.0, rho_decay=1.0, loss_steps=1)
        base.update(changes)
        return cls(**base)

    @property
    def cross_product_dtype(self) -> str:
        """The dtype of the cross sums' per-time-step products: ``cross_dtype``, else the state dtype."""
        return self.cross_dtype or self.dtype

    @property
    def steps_hidden_weights(self) -> bool:
        """Whether the hidden weights move by a step (``step_rule="relative"``, ``weight_step`` ≠ 1 or
        ``momentum`` > 0) rather than to the exact block minimiser."""
        return self.step_rule == "relative" or self.weight_step != 1.0 or self.momentum > 0

    def loss_steps_conflict(self) -> tuple[str, str] | None:
        """The first setting that rules out ``loss_steps`` > 1, as (name, the value it needs), or None: the
        output block with the loss at several steps is the joint one, without the dual or an L1 split."""
        for name, bad, need in (("output_solve", self.output_solve != "joint", "joint"),
                                ("dual", self.dual, "false"),
                                ("l1_output", self.l1_output and self.l1 > 0, "false (or l1 = 0)")):
            if bad:
                return name, need
        return None

    def loss_times(self, T: int) -> list[int] | None:
        """The output loss's steps 𝒯 for T frames (:func:`updates.loss_times`), None for the loss at T alone
        (``loss_steps`` 1, every solver's original path)."""
        from .updates import loss_times
        return loss_times(T, self.loss_steps) if self.loss_steps > 1 else None

    @property
    def output_rho(self) -> float:
        """ρ_L: the output layer's penalty (rho_out, or rho when unset)."""
        return self.rho if self.rho_out is None else self.rho_out

    @property
    def output_ridge(self) -> float:
        """The output layer's relative ridge (ridge_out, or ridge when unset)."""
        return self.ridge if self.ridge_out is None else self.ridge_out

    @property
    def lif(self) -> LIFParams:
        return LIFParams(self.delta, self.theta)

    def replace(self, **changes) -> "ADMMSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ADMMSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}")
        return cls(**values)
