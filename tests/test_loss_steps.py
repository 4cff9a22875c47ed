"""The output loss at several time steps (ADMMSettings.loss_steps): its steps, the exactness of its
(W_L, z_L) block given the targets, its target block, the descent of its rounds, and its use by the
dense and convolutional trainers."""

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm import updates as U
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.state import ADMMState
from admm_snn.errors import SettingsError

F64 = torch.float64


def test_loss_times():
    assert U.loss_times(30, 1) == [29]
    assert U.loss_times(30, 3) == [9, 19, 29]
    assert U.loss_times(20, 3) == [6, 12, 19]
    assert U.loss_times(4, 9) == [0, 1, 2, 3]  # at most every step


def test_loss_weighting_with_the_last_step_is_the_joint_blocks_scalar():
    """𝒯 = {T}: Q = ρ / (ρ + 2 Σ_t δ^{2(T−t)}), the factor of updates.joint_output_statistics."""
    T, delta, rho = 7, 0.9, 3.0
    L = U.loss_weighting(T, delta, rho, [T - 1])
    K = sum(delta ** (2 * k) for k in range(T))
    assert float(L[0, 0] ** 2) == pytest.approx(rho / (rho + 2 * K), rel=1e-12)


def _problem(N=9, T=6, n=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(T, N, n, generator=g) < 0.4).to(F64)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (N,), generator=g), classes).to(F64)
    state = ADMMState([torch.zeros(n, 2, dtype=F64), torch.randn(classes, n, generator=g, dtype=F64)],
                      [torch.zeros(T, N, n, dtype=F64), torch.zeros(T, N, classes, dtype=F64)], [a],
                      torch.zeros(N, classes, dtype=F64))
    return state, torch.zeros(T, N, 2, dtype=F64), y, a


def _objective(W, z, a, tau, times, delta, rho, mu):
    """(ρ/2) Σ_t ‖z_t − δ z_{t-1} − W a_t‖² + Σ_{t∈𝒯} ‖z_t − τ_t‖² + μ ‖W‖²."""
    prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])
    dyn = 0.5 * rho * ((z - delta * prev - a @ W.T) ** 2).sum()
    return dyn + ((z[times] - tau) ** 2).sum() + mu * (W ** 2).sum()


@pytest.mark.parametrize("steps", [2, 3, 6])
def test_joint_block_given_the_targets_is_the_exact_minimiser(steps):
    """W_L by the generalised least squares on the whitened leaky sums and z_L by the T×T solve with the
    loss at 𝒯 minimise the block's objective jointly: its gradient in (W, z) vanishes (float64; the
    objective is a convex quadratic, so a stationary point is its minimiser)."""
    state, frames, y, a = _problem()
    T, delta, rho = a.shape[0], 0.95, 2.0
    times = U.loss_times(T, steps)
    g = torch.Generator().manual_seed(5)
    tau = torch.randn(len(times), a.shape[1], y.shape[1], generator=g, dtype=F64)
    L = U.loss_weighting(T, delta, rho, times)
    Sw = U.whitened(U.leaky_sums_at(a, delta, times), L)
    G, C = U.multistep_gram(Sw), U.multistep_cross(Sw, tau, L)
    mu = U.ridge_tensor(G, 0.1)
    W, _ = U.solve_weights(G, C, 0.1)
    z = U.solve_output_potentials(a @ W.T, tau, torch.zeros_like(y), delta, rho,
                                  U.output_system(T, delta, rho, F64, "cpu", times), times)
    Wv, zv = W.clone().requires_grad_(True), z.clone().requires_grad_(True)
    _objective(Wv, zv, a, tau, times, delta, rho, float(mu)).backward()
    assert float(Wv.grad.abs().max()) < 1e-9 and float(zv.grad.abs().max()) < 1e-9
    # the leaky sums are the leaky integrator's values at the loss steps
    ref = torch.stack([U.leaky_sum(a[: t + 1], delta) for t in times])
    assert torch.allclose(U.leaky_sums_at(a, delta, times), ref, atol=1e-12)


def test_rounds_descend_the_hinge_objective():
    """multistep_output is block coordinate descent of a jointly convex function: the squared-hinge
    objective H(W, z) = (ρ/2)‖Dz − W a‖² + Σ_{t∈𝒯} dist²(z_t, margin set) + μ‖W‖² does not rise with more
    rounds, and with one round the output is the (W, z) block for τ_t = proj(W S_t)."""
    values = []
    for rounds in (1, 2, 4, 8):
        state, frames, y, a = _problem(N=12, seed=3)
        s = ADMMSettings(dtype="float64", loss_steps=3, margin_rounds=rounds, ridge_out=0.1, rho_out=2.0)
        S.parallel_output(state, frames, y, s, S.SolverCache(), torch.Generator())
        times = U.loss_times(a.shape[0], 3)
        z, W = state.potentials[-1], state.weights[-1]
        tau = U.margin_targets(z[times], y.expand(len(times), -1, -1), s.margin)
        L = U.loss_weighting(a.shape[0], s.delta, s.output_rho, times)
        mu = float(U.ridge_tensor(U.multistep_gram(U.whitened(U.leaky_sums_at(a, s.delta, times), L)), 0.1))
        values.append(float(_objective(W, z, a, tau, times, s.delta, s.output_rho, mu)))
    assert all(b <= a_ + 1e-9 for a_, b in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_one_loss_step_is_the_library_block_and_square_loss_targets_are_y():
    """loss_steps = 1 keeps the joint block of the last step unchanged; with the square loss and K steps
    the potentials at the loss steps are pulled to y by the T×T solve."""
    state, frames, y, a = _problem(seed=4)
    s = ADMMSettings(dtype="float64", output_loss="square")
    S.parallel_output(state, frames, y, s, S.SolverCache(), torch.Generator())
    W1 = state.weights[-1].clone()
    state2, *_ = _problem(seed=4)
    S.update_output_joint_weights(state2, frames, y, s)
    assert torch.equal(W1, state2.weights[-1])
    state3, *_ = _problem(seed=4)
    s3 = s.replace(loss_steps=3)
    S.parallel_output(state3, frames, y, s3, S.SolverCache(), torch.Generator())
    times = U.loss_times(a.shape[0], 3)
    err_3 = float(((state3.potentials[-1][times] - y) ** 2).sum())
    err_1 = float(((state.potentials[-1][times] - y) ** 2).sum())
    assert err_3 < err_1  # the loss is now on every step of 𝒯


@pytest.mark.parametrize("change,needle", [
    (dict(loss_steps=0), "loss_steps"),
    (dict(loss_steps=True), "loss_steps"),
    (dict(loss_steps=3, output_solve="potentials"), "output_solve=joint"),
    (dict(loss_steps=3, dual=True), "dual=false"),
    (dict(loss_steps=3, l1=0.1, l1_output=True), "l1_output"),
])
def test_bad_loss_steps_settings_are_one_line_errors(change, needle):
    with pytest.raises(SettingsError) as e:
        ADMMSettings(**change)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_dense_and_conv_trainers_run_with_several_loss_steps():
    from admm_snn.conv_train import fit_conv
    from admm_snn.train import train
    g = torch.Generator().manual_seed(2)
    frames = (torch.rand(6, 40, 2 * 8 * 8, generator=g) < 0.3).float()
    labels = torch.arange(40) % 3
    s = ADMMSettings(iterations=2, loss_steps=3)
    a, b = (train(frames, labels, [12], s, n_classes=3, progress=False) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights)) and len(a.history) == 2
    plain = train(frames, labels, [12], s.replace(loss_steps=1), n_classes=3, progress=False)
    assert not torch.equal(plain.weights[-1], a.weights[-1])
    c = fit_conv(frames, labels, "3c3-p2-6", (2, 8, 8), s)
    assert len(c.history) == 3 and all(torch.isfinite(w).all() for w in c.weights)


def test_the_reported_loss_is_on_every_loss_step():
    from admm_snn.admm.lagrangian import lagrangian_terms
    from admm_snn.metrics import lagrangian_of
    state, frames, y, a = _problem(seed=6)
    s = ADMMSettings(dtype="float64", loss_steps=3)
    S.parallel_output(state, frames, y, s, S.SolverCache(), torch.Generator())
    times = U.loss_times(a.shape[0], 3)
    terms = lagrangian_of(state, frames, y, s)
    assert terms["loss"] == pytest.approx(float(((state.potentials[-1][times] - y) ** 2).sum()), rel=1e-12)
    last = lagrangian_terms(state, frames, y, s.rho, s.beta, s.lif, s.output_rho)["loss"]
    assert last == pytest.approx(float(((state.potentials[-1][-1] - y) ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("argv,expected", [
    (["train", "--dataset", "nmnist"], 3),
    (["train", "--dataset", "nmnist", "--loss-steps", "1"], 1),
    (["train", "--dataset", "nmnist", "--loss-steps", "2"], 2),
    (["train", "--dataset", "nmnist", "--preset", "paper"], 1),
    (["train", "--dataset", "nmnist", "--federated"], 1),
    (["train", "--dataset", "nmnist", "--arch", "8c5-p4-64"], 1),
    (["train", "--dataset", "nmnist", "--dual"], 1),
    (["train", "--dataset", "nmnist", "--output-solve", "potentials"], 1),
    (["train", "--dataset", "mnist"], 1),
    (["train", "--dataset", "mnist", "--loss-steps", "3"], 3),
    (["train"], 1),
    (["train", "--preset", "paper"], 1),
    (["sweep", "--dataset", "nmnist"], 3),
])
def test_the_commands_loss_steps(argv, expected):
    """--loss-steps left out: 3 for dense networks on N-MNIST where the settings allow it, else the loss at
    T alone (the paper preset, federated and conv runs, the image datasets); a given value is kept."""
    from admm_snn.cli import build_parser
    from admm_snn.options import admm_settings
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    assert admm_settings(args).loss_steps == expected


def test_loss_steps_with_federated_is_a_one_line_error():
    from admm_snn.cli import build_parser
    from admm_snn.options import admm_settings
    args = build_parser().parse_args(["train", "--dataset", "nmnist", "--federated", "--loss-steps", "3"])
    with pytest.raises(SettingsError) as e:
        admm_settings(args)
    assert "--loss-steps 3" in str(e.value) and "--federated" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("given,dense,conv", [([], 3, 1), (["--loss-steps", "3"], 3, 3), (["--loss-steps", "1"], 1, 1)])
def test_compare_conv_rows_keep_the_loss_at_T_unless_told(monkeypatch, given, dense, conv):
    """compare on N-MNIST: the dense rows' ADMM has the loss on 3 steps by default, the conv rows' at T
    alone (arch_loss_steps); an explicit --loss-steps applies to both."""
    import admm_snn.experiments.compare as C
    from admm_snn.cli import main
    seen = {}
    monkeypatch.setattr(C, "run_compare", lambda config, out, log: seen.setdefault("config", config))
    argv = ["compare", "--dataset", "nmnist", "--data-dir", "unused", "--arch", "4c5-p4-16", "--depths", "1", *given]
    assert main(argv) == 0
    config = seen["config"]
    assert config.admm.loss_steps == dense and config.conv_settings().loss_steps == conv
    assert config.to_dict()["arch_loss_steps"] == (1 if not given else None)
