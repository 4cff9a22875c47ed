#!/usr/bin/env bash
# Device check of the fast ADMM solver on CUDA (prepared, to be run on a machine with a GPU).
#
#   OUT=/path/to/results bash bench/gpu_check.sh
#
# 1. the test subset that exercises the solver (tests/test_schedules.py runs its device tests on every
#    available device, so on a GPU machine they run on "cuda" as well as "cpu"), with the block updates'
#    exactness tests;
# 2. the speed bench on CUDA: parallel vs sequential at N=1000, T=30, 1 hidden of 128 (real N-MNIST if
#    ../shared/data/nmnist exists, else generated), the N=4000 width-512 FLOP-rate point, and the growth
#    in N; the full-scale N=60000 2312-512-10 single iteration (uint8 frames);
# everything is written under $OUT (default ./gpu-check-out): pytest log, bench folders with bench.md,
# bench.json and bench.png, nvidia-smi and torch versions.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
{
  nvidia-smi || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} > "$OUT/env.txt" 2>&1

# 1. tests (device tests run on cuda too when it is available)
# sized for a device lease of ~15 minutes in all (start-up included): about 9 minutes of commands
timeout 150 "$PY" -m pytest -q -x tests/test_schedules.py -k "device or strided or int8" \
  > "$OUT/pytest.txt" 2>&1
echo "pytest exit $?" >> "$OUT/pytest.txt"

B="$PY bench/speed.py --device cuda"
timeout 150 $B --n 1000 --hidden 128 --iterations 5 --seq-iterations 2 --accuracy --out "$OUT/n1000_w128" \
  > "$OUT/n1000_w128.log" 2>&1
timeout 90 $B --n 4000 --hidden 512 --iterations 5 --schedules parallel --out "$OUT/n4000_w512" \
  > "$OUT/n4000_w512.log" 2>&1
timeout 120 $B --n 1000 4000 16000 --hidden 128 --iterations 3 --schedules parallel \
  --out "$OUT/growth_w128" > "$OUT/growth_w128.log" 2>&1
timeout 120 $B --n 60000 --hidden 512 --iterations 1 --schedules parallel --no-breakdown --set chunk_size=4000 --set init_rate=null \
  --out "$OUT/full_n60000" > "$OUT/full_n60000.log" 2>&1
echo done > "$OUT/DONE"
