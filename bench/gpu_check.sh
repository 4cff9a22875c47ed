#!/usr/bin/env bash
# Device check of the fast ADMM solver on CUDA (prepared, to be run on a machine with a GPU).
#
#   OUT=/path/to/results bash bench/gpu_check.sh                 # on the GPU machine
#   DEVICE=cpu SMALL=1 OUT=/tmp/dry bash bench/gpu_check.sh      # dry run of the same steps on a CPU
#
# DATA (default ../shared/data/nmnist) is the real N-MNIST folder; PYTHON (default .venv/bin/python if
# present, else python3) the interpreter, which must import torch and admm_snn (PYTHONPATH=src will do).
#
# 1. tests: the device subset of tests/test_schedules.py (its device tests run on "cuda" as well as "cpu"
#    where CUDA is available; the host-synchronisation count per iteration runs only on CUDA) with the
#    exactness tests of the fast paths;
# 2. `admm-snn train --device cuda` end to end on real N-MNIST (a few iterations; its metrics.jsonl);
# 3. the speed bench on the device: parallel vs sequential at N=1000, T=30, 1 hidden of 128 on real
#    N-MNIST with the training accuracy after the same iterations; the N=4000 width-512 FLOP-rate point
#    (the default sparse input products through cuSPARSE, and dense ones);
#    time per iteration against N (1000, 4000, 16000); one iteration at the full N-MNIST scale
#    (N=60000, 2312-512-10, generated frames of the real density).
# Everything is written under $OUT (default ./gpu-check-out): env.txt, pytest.txt, train/, and one
# folder per bench with bench.md, bench.json and bench.png, plus each step's log. Sized for a device
# lease of 15 minutes (start-up included): the steps' time limits add up to 9 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"
DEVICE="${DEVICE:-cuda}"
DATA="${DATA:-../shared/data/nmnist}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
if [ -n "${SMALL:-}" ]; then  # dry run: the same commands on small sizes
  N1=200; N4=400; NS="200 400"; NF=800; HF=64; IT=2
else
  N1=1000; N4=4000; NS="1000 4000 16000"; NF=60000; HF=512; IT=5
fi
export PYTHONUNBUFFERED=1
{
  date; nvidia-smi || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  "$PY" -c "import admm_snn, tonic; print('admm_snn', admm_snn.__file__, 'tonic', tonic.__version__)"
} > "$OUT/env.txt" 2>&1

step() {  # step NAME LIMIT_S command...: run with a time limit, log to $OUT/NAME.log, note the exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}

# 1. tests
step pytest 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_schedules.py tests/test_sparse_inputs.py \
  -k "device or strided or int8 or synchron or block_products" -rs

# 2. the CLI end to end on the device
step train 60 "$PY" -m admm_snn.cli train --dataset nmnist --data-dir "$DATA" --device "$DEVICE" \
  --iterations 4 --hidden 128 --seed 0 --out "$OUT/train"

# 3. speed
B=("$PY" -m admm_snn.cli bench --device "$DEVICE" --data-dir "$DATA")
step n1000_w128 90 "${B[@]}" --n $N1 --hidden 128 --iterations $IT --seq-iterations $IT --accuracy --out "$OUT/n1000_w128"
step n4000_w512 60 "${B[@]}" --n $N4 --hidden 512 --iterations $IT --schedules parallel --out "$OUT/n4000_w512"
step n4000_w512_dense 60 "${B[@]}" --n $N4 --hidden 512 --iterations $IT --schedules parallel \
  --set input_format=dense --out "$OUT/n4000_w512_dense"
step growth_w128 60 "${B[@]}" --n $NS --hidden 128 --iterations 3 --schedules parallel --no-breakdown --out "$OUT/growth_w128"
step full_n60000 120 "${B[@]}" --n $NF --hidden $HF --iterations 1 --schedules parallel --no-breakdown \
  --set init_rate=null --out "$OUT/full_n60000"
echo done >> "$OUT/steps.txt"
# one archive (the device tool brings back at most 8 files), the checkpoints left out
ARCHIVE="$(mktemp -d)/gpu-check.tgz"
tar czf "$ARCHIVE" -C "$OUT" --exclude='*.safetensors' . && \
  find "$OUT" -mindepth 1 ! -name steps.txt -delete && mv "$ARCHIVE" "$OUT/"
echo "archive: $OUT/gpu-check.tgz ($(du -h "$OUT/gpu-check.tgz" | cut -f1))"
