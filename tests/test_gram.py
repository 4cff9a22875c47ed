"""The exact input Gram (admm/gram.py): every kernel equals the float64 product bit for bit, including
past the float32 accumulator's 2^24 bound; the kernel is chosen from the frames' values and density; the
solver forms it once per run and records the kernel it took."""

from __future__ import annotations

import pytest
import torch

from admm_snn.admm import gram as GR
from admm_snn.admm import solver as S
from admm_snn.admm.settings import ADMMSettings
from admm_snn.admm.sparse_inputs import transposed_csr

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(rows, n, values, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(values, dtype=torch.uint8)
    pick = v[torch.randint(1, len(values), (rows, n), generator=g)]
    return torch.where(torch.rand(rows, n, generator=g) < density, pick, torch.zeros_like(pick))


def _reference(a):
    a = a.reshape(-1, a.shape[-1]).double()
    return a.T @ a


@pytest.mark.parametrize("kind", ["sparse-float32", "dense-float32", "float64"])
@pytest.mark.parametrize("values", [(0, 1), (0, 1, 2, 255)])
def test_every_kernel_is_the_float64_gram_exactly(kind, values):
    a = _frames(301, 37, values, 0.3)
    acc = GR.ExactGram(37, int(a.max()), kind, a.device)
    for r0 in range(0, 301, 100):  # several blocks, as the solver adds them
        rows = a[r0:r0 + 100]
        if kind == "sparse-float32":
            acc.add_sparse(rows, transposed_csr(rows, torch.float32))
        else:
            acc.add_dense(rows)
    assert torch.equal(acc.total(), _reference(a))


def test_float32_accumulator_is_flushed_before_it_could_round(monkeypatch):
    """With the bound lowered to 2^10 (as if there were 2^24 rows), the accumulator is moved into the
    float64 sum before any entry could pass the bound, and the sums (far beyond it) stay exact."""
    a = _frames(4000, 16, (0, 1, 3), 0.9, seed=1)
    ref = _reference(a)
    assert float(ref.max()) > 2 ** 10
    monkeypatch.setattr(GR, "EXACT_FLOAT32", 2 ** 10)
    peaks = []
    flush = GR.ExactGram.flush

    def watched(self):
        if self.acc is not None:
            peaks.append(float(self.acc.max()))
        flush(self)

    monkeypatch.setattr(GR.ExactGram, "flush", watched)
    for kind in ("sparse-float32", "dense-float32"):
        peaks.clear()
        acc = GR.ExactGram(16, 3, kind, a.device)
        for r0 in range(0, 4000, 50):
            rows = a[r0:r0 + 50]
            acc.add_sparse(rows, transposed_csr(rows, torch.float32)) if kind == "sparse-float32" else acc.add_dense(rows)
        assert torch.equal(acc.total(), ref), kind
        assert len(peaks) > 10 and max(peaks) <= 2 ** 10, kind


def test_kernel_rule_follows_values_and_density():
    assert GR.kernel(1, 0.035) == "sparse-float32"
    assert GR.kernel(1, GR.SPARSE_MAX_DENSITY) == "sparse-float32"
    assert GR.kernel(1, 0.13) == "dense-float32"
    assert GR.kernel(1, None) == "dense-float32"
    assert GR.kernel(None, 0.01) == "float64"


def test_integer_detection():
    cases = (((torch.rand(3, 5, 8) < 0.3).to(torch.uint8), 1), (torch.full((2, 3, 8), 200, dtype=torch.uint8), 200),
             (torch.full((2, 3, 8), 0.5), None), (torch.ones(2, 3, 8), 1), (-torch.ones(2, 3, 8), None),
             (torch.full((2, 3, 8), 256.0), None))
    for frames, expected in cases:
        assert GR.frames_integer_max(frames) == expected


def test_gram_of_non_integer_frames_is_the_float64_product():
    a = torch.rand(3, 20, 9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(GR.gram(a), _reference(a))


@pytest.mark.parametrize("input_format,density,kind", [("sparse", 0.05, "sparse-float32"),
                                                       ("dense", 0.05, "sparse-float32"),
                                                       ("auto", 0.3, "dense-float32")])
def test_solver_forms_the_input_gram_once_with_the_rule_s_kernel(input_format, density, kind):
    g = torch.Generator().manual_seed(4)
    X = (torch.rand(6, 90, 40, generator=g) < density).to(torch.uint8)
    lab = torch.arange(90) % 3
    s = ADMMSettings(iterations=2, input_format=input_format, chunk_size=25)
    y = torch.nn.functional.one_hot(lab, 3).float()
    cache = S.SolverCache()
    state = S.init_state(X, y, [40, 8, 3], s, torch.Generator().manual_seed(0), cache=cache)
    S.iterate(state, X, y, s, cache, torch.Generator().manual_seed(1))
    assert cache.paths["input_gram"] == kind
    assert torch.equal(cache.input_gram, _reference(X))
    G = cache.input_gram
    S.iterate(state, X, y, s, cache, torch.Generator().manual_seed(2))
    assert cache.input_gram is G  # formed once per run
