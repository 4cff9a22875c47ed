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


@pytest.mark.parametrize("block", [2048, 7])
def test_shift_frames_moves_every_pixel_by_the_offset(block, monkeypatch):
    import admm_snn.data.augment as A
    monkeypatch.setattr(A, "SHIFT_BLOCK", block)  # 7: the gather runs in blocks of samples
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
    assert torch.equal(shift_frames(X.to(torch.uint8), off, shape, s), want.to(torch.uint8).view_as(X))
    with pytest.raises(SettingsError, match="at most 1"):
        shift_frames(X, off, shape, 1)


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
    assert r.key == "shift1-seed3-groups16"
    assert ShiftResampler(X, (2, 6, 7), 1, 3, groups=0).key == "shift1-seed3"


def test_default_shift_follows_the_sensor_and_the_commands():
    from types import SimpleNamespace as NS
    from admm_snn.data.augment import default_shift
    from admm_snn.options import augment_shift
    assert default_shift((2, 34, 34)) == default_shift((1, 28, 28)) == 1
    assert default_shift((1, 8, 8)) == 0 and default_shift(None) == 0
    assert augment_shift(NS(augment_shift=None, augment_groups=16, federated=False, preset="default")) is None
    assert augment_shift(NS(augment_shift=None, augment_groups=16, federated=False, preset="paper")) == 0
    assert augment_shift(NS(augment_shift=None, augment_groups=16, federated=True, preset="default")) == 0
    assert augment_shift(NS(augment_shift=2, augment_groups=16, federated=False, preset="paper")) == 2


def test_grouped_offsets_move_a_group_together_and_groups_zero_is_per_sample():
    X = _frames(N=50)
    r = ShiftResampler(X, (2, 6, 7), 1, seed=3, groups=4)
    groups = r.sample_groups
    assert torch.equal(groups, r.sample_groups) and set(groups.tolist()) == {0, 1, 2, 3}
    for k in (1, 2, 9):
        off, per_group = r.offsets(k), r.group_offsets(k)
        assert per_group.shape == (4, 2) and torch.equal(off, per_group[groups])
    assert not torch.equal(r.group_offsets(1), r.group_offsets(2))
    # groups=0: one offset per sample, the draw's generator alone
    p = ShiftResampler(X, (2, 6, 7), 1, seed=3, groups=0)
    want = torch.randint(-1, 2, (50, 2), generator=torch.Generator().manual_seed(3 * 1_000_003 + 2))
    assert torch.equal(p.offsets(2), want) and p.sample_groups is None
    with pytest.raises(SettingsError, match="groups"):
        ShiftResampler(X, (2, 6, 7), 1, groups=-1)
    with pytest.raises(SettingsError, match="groups > 0"):
        p.input_gram(1, [])


@pytest.mark.parametrize("groups", [4, 0])
def test_shards_draw_what_the_whole_resampler_draws(groups):
    X = _frames(N=50)
    r = ShiftResampler(X, (2, 6, 7), 1, seed=3, groups=groups)
    parts = [r.shard(0, 17), r.shard(17, 40), r.shard(40, 50)]
    for k in (0, 1, 4):
        assert torch.equal(torch.cat([p(k) for p in parts], dim=1), r(k))
        assert torch.equal(torch.cat([p.offsets(k) for p in parts]), r.offsets(k))
    if groups:
        assert torch.equal(torch.cat([p.sample_groups for p in parts]), r.sample_groups)
    assert parts[1].key == r.key and parts[1].shard(3, 5).first == 20
    with pytest.raises(SettingsError, match="outside"):
        r.shard(10, 60)


@pytest.mark.parametrize("shape,s,groups", [((2, 6, 7), 1, 5), ((1, 9, 8), 2, 3), ((2, 6, 7), 2, 64)])
def test_gram_of_a_draw_from_group_grams_is_bitwise_the_gram_of_the_shifted_frames(shape, s, groups):
    X = _frames(T=3, N=40, shape=shape, seed=4)
    r = ShiftResampler(X, shape, s, seed=1, groups=groups)
    state = S.init_state(X, torch.eye(3)[torch.arange(40) % 3].double(), [X.shape[2], 4, 3],
                         ADMMSettings(), torch.Generator().manual_seed(0))
    grams = S.group_input_grams(state, X, r.sample_groups, groups, ADMMSettings(), X)
    assert len(grams) == groups and all(g.dtype == torch.float32 for g in grams)  # small counts: exact
    for k in (0, 1, 2, 3):
        moved = r(k).double().reshape(-1, X.shape[2])
        assert torch.equal(r.input_gram(k, grams), moved.T @ moved)
    # one pixel, by hand: the moved Gram of a single frame row is the outer product of the moved row
    one = torch.zeros(shape[0] * shape[1] * shape[2], dtype=torch.float64)
    one[[3, 17]] = 1.0
    from admm_snn.data.augment import shift_gram
    moved = shift_frames(one[None, None], torch.tensor([[1, -1]]), shape, s)[0, 0]
    assert torch.equal(shift_gram(torch.outer(one, one), (1, -1), shape), torch.outer(moved, moved))


def test_grouped_gram_in_train_gives_bitwise_the_weights_of_forming_it_from_the_frames(monkeypatch):
    X, lab, val = _problem()
    calls = {"group": 0, "frames": 0}
    group_grams, input_gram = S.group_input_grams, S.input_gram

    def count_group(*a, **k):
        calls["group"] += 1
        return group_grams(*a, **k)

    def count_frames(state, frames, *a, **k):  # Grams of the whole training frames (N = 40)
        calls["frames"] += frames.shape[1] == 40
        return input_gram(state, frames, *a, **k)
    monkeypatch.setattr(S, "group_input_grams", count_group)
    monkeypatch.setattr(S, "input_gram", count_frames)
    r = ShiftResampler(X, (1, 5, 5), 1, seed=5, groups=6)

    def direct(k):  # the same draws, without the groups' Grams: the solver forms each draw's Gram
        return r(k)
    direct.key = r.key
    s = ADMMSettings(iterations=4, warmup=1, seed=0)
    a = train(X, lab, [6], s, val=val, progress=False, resample=r)
    assert calls == {"group": 1, "frames": 0}  # every draw's Gram (draw 0 too) from the groups' Grams
    b = train(X, lab, [6], s, val=val, progress=False, resample=direct)
    assert calls["group"] == 1 and calls["frames"] >= 4  # draws 0-3 from the frames
    for wa, wb in zip(a.final_weights, b.final_weights):
        assert torch.equal(wa, wb)


def test_memory_estimate_counts_the_group_grams():
    from admm_snn.resources import estimate_memory
    s = ADMMSettings()
    base = estimate_memory([784, 128, 10], 20, 1000, s)
    more = estimate_memory([784, 128, 10], 20, 1000, s, group_grams=16)
    assert more["gram"] - base["gram"] == 16 * 784 * 784 * 8 and more["total"] > base["total"]


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
    assert main(["train", *small, "--augment-shift", "1", "--nproc", "2", "--federated"]) != 0
    assert "--augment-shift is for single-process and data-parallel runs" in capsys.readouterr().err
    assert main(["train", *small, "--augment-shift", "1", "--augment-groups", "0"]) == 0
    assert main(["train", *small, "--augment-shift", "1", "--augment-groups", "-1"]) != 0
    err = capsys.readouterr().err
    assert "--augment-groups must be 0" in err and "Traceback" not in err
    assert main(["train", *small, "--augment-shift", "-1"]) != 0
    assert "--augment-shift must be 0" in capsys.readouterr().err
    assert main(["train", *small, "--nproc", "2", "--federated", "--timeout", "60"]) == 0  # default: no shift


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
