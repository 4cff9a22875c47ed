"""Shift augmentation (data/augment.py) and train(resample=...): the shift is the stated pixel move, the
draws are seeded per redraw, the states after a redraw are the forward simulation on the new frames,
a resumed augmented run is bitwise an uninterrupted one, and bad use is one line."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.cli import main
from admm_snn.data.augment import ShiftResampler, shift_frames
from admm_snn.errors import SettingsError
from admm_snn.network import LIFParams, forward
from admm_snn.train import train


def _frames(T=4, N=30, shape=(2, 6, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, N, shape[0] * shape[1] * shape[2], generator=g) < 0.4).float()


def test_shift_frames_moves_every_pixel_by_the_offset():
    shape, s = (2, 6, 7), 2
    X = _frames(shape=shape)
    off = torch.randint(-s, s + 1, (X.shape[1], 2), generator=torch.Generator().manual_seed(1))
    got = shift_frames(X, off, shape, s).view(X.shape[0], X.shape[1], *shape)
    src = X.view(X.shape[0], X.shape[1], *shape)
    want = torch.zeros_like(src)
    for n in range(X.shape[1]):
        dy, dx = int(off[n, 0]), int(off[n, 1])
        for i in range(shape[1]):
            for j in range(shape[2]):
                if 0 <= i - dy < shape[1] and 0 <= j - dx < shape[2]:
                    want[:, n, :, i, j] = src[:, n, :, i - dy, j - dx]
    assert torch.equal(got, want)
    assert torch.equal(shift_frames(X, torch.zeros_like(off), shape, s), X)


def test_resampler_is_seeded_per_draw_and_keeps_its_source():
    X = _frames()
    r = ShiftResampler(X, (2, 6, 7), max_shift=1, seed=3)
    before = X.clone()
    assert torch.equal(r(2), ShiftResampler(X, (2, 6, 7), 1, 3)(2))
    assert not torch.equal(r(1), r(2))
    assert not torch.equal(r(2), ShiftResampler(X, (2, 6, 7), 1, 4)(2))
    assert torch.equal(r(0), X) and torch.equal(X, before)
    offs = r.offsets(5)
    assert int(offs.abs().max()) == 1 and set(offs.flatten().tolist()) == {-1, 0, 1}
    assert r.key == "shift1-seed3"


@pytest.mark.parametrize("kwargs,match", [({"max_shift": 0}, "at least 1"), ({"max_shift": 3}, "too large"),
                                          ({"shape": (1, 6, 7)}, "inputs")])
def test_bad_augmentation_is_one_line(kwargs, match):
    X = _frames()
    args = {"frames": X, "shape": (2, 6, 7), "max_shift": 1, **kwargs}
    with pytest.raises(SettingsError, match=match):
        ShiftResampler(**args)(1)


def _problem():
    X = _frames(T=5, N=40, shape=(1, 5, 5), seed=2)
    labels = torch.arange(40) % 3
    val = (_frames(T=5, N=20, shape=(1, 5, 5), seed=3), torch.arange(20) % 3)
    return X, labels, val


def test_states_follow_the_new_draw_and_the_callers_frames_stay():
    X, lab, val = _problem()
    before = X.clone()
    r = ShiftResampler(X, (1, 5, 5), 1, seed=0)
    s = ADMMSettings(iterations=2, warmup=1, seed=0)
    res = train(X, lab, [6], s, val=val, progress=False, resample=r)
    assert torch.equal(X, before)
    # after iteration 2 the hidden states are the forward simulation of the hidden weights on draw 2
    trace = forward(res.state.weights, r(2), LIFParams(s.delta, s.theta))
    assert torch.equal(res.state.spikes[0], trace.spikes[0])
    plain = train(X, lab, [6], s, val=val, progress=False)
    assert not torch.equal(plain.final_weights[0], res.final_weights[0])


@pytest.mark.determinism
def test_augmented_resume_is_bitwise(tmp_path):
    X, lab, val = _problem()
    r = ShiftResampler(X, (1, 5, 5), 1, seed=7)
    s = ADMMSettings(iterations=5, warmup=1, seed=1)
    a = train(X, lab, [6], s, val=val, out=tmp_path / "a", checkpoint_every=1, progress=False, resample=r)
    train(X, lab, [6], s.replace(iterations=3), val=val, out=tmp_path / "b", checkpoint_every=1,
          progress=False, resample=r)
    b = train(X, lab, [6], s, val=val, out=tmp_path / "b", checkpoint_every=1, resume=True, progress=False,
              resample=r)
    for wa, wb in zip(a.final_weights, b.final_weights):
        assert torch.equal(wa, wb)
    assert a.best_iteration == b.best_iteration
    with pytest.raises(Exception, match="data|fingerprint|differ"):  # other augmentation: refused
        train(X, lab, [6], s.replace(iterations=6), val=val, out=tmp_path / "b", checkpoint_every=1,
              resume=True, progress=False, resample=ShiftResampler(X, (1, 5, 5), 1, seed=8))


def test_resample_misuse_is_one_line():
    X, lab, val = _problem()
    with pytest.raises(SettingsError, match="re-projection"):
        train(X, lab, [6], ADMMSettings(iterations=1, reproject=0), progress=False, resample=lambda k: X)
    with pytest.raises(SettingsError, match=r"resample\(1\) returned"):
        train(X, lab, [6], ADMMSettings(iterations=1), progress=False, resample=lambda k: X[:, :3])


def test_forget_inputs_drops_what_came_from_the_frames():
    c = S.SolverCache()
    c.input_gram = c.input_gram_factor = c.input_mu = torch.ones(1)
    c.extra[("sparse-block", 0, 4)] = 1
    c.extra[("l1_factor", 0)] = 1
    c.extra[("buffer", "x")] = 2
    S.forget_inputs(c)
    assert c.input_gram is None and c.input_gram_factor is None and c.input_mu is None
    assert list(c.extra) == [("buffer", "x")]


def test_cli_train_with_augment_shift(tmp_path, capsys):
    small = ["--dataset", "digits", "--time-steps", "5", "--hidden", "6", "--iterations", "2", "--quiet"]
    assert main(["train", *small, "--augment-shift", "1", "--out", str(tmp_path / "r")]) == 0
    assert main(["train", *small, "--augment-shift", "1", "--nproc", "2"]) != 0
    assert "--augment-shift is for single-process runs" in capsys.readouterr().err


def test_bptt_trains_epoch_k_plus_1_on_draw_k():
    from admm_snn.baselines.bptt import BPTTSettings, train_bptt
    X, lab, _ = _problem()
    params, s = LIFParams(0.9, 1.0), BPTTSettings(epochs=3, lr=1e-2, batch_size=20, seed=0)
    base = train_bptt(X, lab, [6], params, s)
    same = train_bptt(X, lab, [6], params, s, resample=lambda k: X.clone())
    for a, b in zip(base.weights, same.weights):  # the plumbing alone changes nothing
        assert torch.equal(a, b)
    calls = []

    def shifted(k):
        calls.append(k)
        return ShiftResampler(X, (1, 5, 5), 1, seed=0)(k)
    moved = train_bptt(X, lab, [6], params, s, resample=shifted)
    assert calls == [1, 2] and not torch.equal(moved.weights[0], base.weights[0])
    with pytest.raises(SettingsError, match=r"resample\(1\) returned"):
        train_bptt(X, lab, [6], params, s, resample=lambda k: X[:, :3])


def test_compare_with_augment_shift(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--depths", "1", "--seeds", "1", "--iterations", "2", "--bptt-epochs", "2",
                 "--time-steps", "5", "--hidden-width", "8", "--val-fraction", "0.4", "--test-fraction", "0.4",
                 "--bptt-batch-size", "128", "--augment-shift", "1", "--out", str(out)]) == 0
    import json
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["augment_shift"] == 1
    assert {r["method"] for r in res["runs"]} == {"admm", "bptt", "floor"}
    assert "**Augmentation.** Both methods" in (out / "results.md").read_text()
