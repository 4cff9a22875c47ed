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


def test_conv_flops_count_the_products_of_the_shapes():
    """A conv layer's product is 2·(output elements)·C_in·k² (the output shape of a real conv2d); the
    spike block below a narrower dense layer is counted through Woodbury (4kn + 2k² a row), below a conv
    layer as 2 operator applications per CG iteration or as the direct solve's products."""
    from admm_snn.admm import conv_solver as CS
    from admm_snn.admm.settings import ADMMSettings
    from admm_snn.experiments import bench_conv as BC
    problem = CS.conv_problem("4c5s2p1-6c3-32", (2, 16, 16), 10, spike_solve="cg")
    conv1, conv2 = problem.net[0], problem.net[1]
    out = torch.nn.functional.conv2d(torch.zeros(3, 2, 16, 16), torch.zeros(4, 2, 5, 5), stride=2, padding=1)
    assert BC.conv_layer_flops(conv1, 3) == 2 * out.numel() * 2 * 25
    s = ADMMSettings()
    f0, f1 = (BC.conv_iteration_flops(problem, 5, 7, s, {0: k}) for k in (0, 3))
    assert f1["layer1"] - f0["layer1"] == pytest.approx(3 * 2 * BC.conv_layer_flops(conv2, 35))
    assert f1["layer2"] == f0["layer2"] and f0["total"] == pytest.approx(sum(v for k, v in f0.items() if k != "total"))
    dense = problem.net[2]  # 32 neurons below 10 outputs: Woodbury; with the box solver: the 32² Cholesky
    box = BC.conv_iteration_flops(problem, 5, 7, s.replace(spike_solver="box"), {0: 0})
    assert box["layer3"] - f0["layer3"] == pytest.approx(35 * (2 * 32 ** 2 - 4 * 10 * 32 - 2 * 10 ** 2)
                                                         + (2 * 10 * 32 ** 2 + 2 * 32 ** 3 / 3)
                                                         - (2 * 10 * 10 * 32 + 2 * 10 ** 3 / 3))
    assert dense.n_out == 32
    # the direct solve below conv2 (4x7x7 = 196 numbers): CᵀC from 4·5·5 probe images (3x3 kernel: unit
    # images 5 apart share one), two factors, 2·196² a row
    direct = CS.conv_problem("4c5s2p1-6c3-32", (2, 16, 16), 10, spike_solve="direct")
    assert direct.spike_method(0) == "direct" and problem.spike_method(0) == "cg"
    d = BC.conv_iteration_flops(direct, 5, 7, s)
    assert d["layer1"] - f0["layer1"] == pytest.approx(2 * BC.conv_layer_flops(conv2, 100) + 2 * 196 ** 3 / 3
                                                       + 2 * 35 * 196 ** 2)


def test_conv_measurement_and_report(tmp_path):
    from admm_snn.admm import conv_solver as CS
    from admm_snn.experiments import bench_conv as BC
    cfg = {"N": 12, "T": 3, "arch": "4c5-p4-8", "set": {}, "iterations": 1, "frames": "uint8",
           "data_dir": None, "cache_dir": str(tmp_path), "device": "cpu", "threads": None}
    r = BC.measure_conv(cfg)
    assert r["sizes"] == [2312, 4 * 30 * 30, 8, 10] and r["sec_per_iter"] > 0 and len(r["iteration_s"]) == 1
    assert r["flops"]["total"] > 0 and r["gflops_per_s"] > 0
    rate = BC.conv_rate(CS.conv_problem("4c5-p4-8", (2, 34, 34), 10).net[0], "cpu", batch=8, repeats=1)
    assert rate > 0
    md = BC.markdown([r], 1e9, {"layer 1": rate}, "# test")
    assert "% conv2d" in md and "| layer1 |" in md and f"| {r['N']} |" in md
