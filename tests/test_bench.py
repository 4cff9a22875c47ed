"""admm-snn bench: a measurement reports the CPU, torch's CPU capability and the kernel each product
took, and the report shows them."""

from __future__ import annotations

import pytest
import torch

from admm_snn.experiments import bench as B

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(density):
    return {"N": 40, "T": 4, "hidden": [8], "schedule": "parallel", "preset": "default", "set": {},
            "iterations": 2, "subset": None, "frames": "uint8", "data_dir": None, "cache_dir": None,
            "device": "cpu", "threads": None, "breakdown": False, "accuracy": False, "inputs": 30,
            "density": density}


@pytest.mark.parametrize("density,gram,currents", [(0.05, "sparse-float32", "sparse CSR"),
                                                   (0.3, "dense-float32", "dense, float32")])
def test_measurement_reports_capability_and_kernels(density, gram, currents):
    r = B.measure(_cfg(density))
    assert r["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert r["sizes"] == [30, 8, 10] and r["source"] == "generated" and r["density"] == density
    assert r["paths"]["input_gram"] == gram
    assert r["paths"]["input_currents"] == currents
    assert r["first_iteration_s"] > 0 and len(r["iteration_s"]) == 2
    md = B.markdown([r], 1e9, 1e9, "# test")
    assert f"torch CPU capability: {r['cpu_capability']}" in md and f"input_gram: {gram}" in md
