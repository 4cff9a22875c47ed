"""Shared test fixtures.

The real N-MNIST subset lives outside the repository, at ``../shared/data`` relative to the repository
root (read-only). Tests that need it use the ``nmnist_root`` / ``nmnist_manifest`` fixtures, which skip
with a clear reason when it is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NMNIST_ROOT = SHARED / "nmnist"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "determinism: bitwise resume and data-parallel equality; `make test-determinism` runs them "
                   "again on torch's and MKL's AVX2 kernels")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors (threads only add contention on a shared
    machine: 40x slower grids); modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED} (expected ../shared/data next to the repository)")
    return SHARED


@pytest.fixture(scope="session")
def nmnist_root(shared_data) -> Path:
    if not (NMNIST_ROOT / "Train").is_dir():
        pytest.skip(f"real N-MNIST subset not found at {NMNIST_ROOT / 'Train'}")
    return NMNIST_ROOT


@pytest.fixture(scope="session")
def nmnist_manifest(nmnist_root) -> list[dict]:
    path = nmnist_root / "manifest.csv"
    if not path.is_file():
        pytest.skip(f"N-MNIST manifest not found at {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
