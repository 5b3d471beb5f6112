#!/usr/bin/env bash
# The prepared GPU check (run through the `device` tool when a GPU is lent; see
# benchmarks/README.md). It checks the CUDA path end to end and measures throughput:
#   1. ablate's trainer vs the pytorch/examples loop on the GPU (img/s, FLOP/s);
#   2. bf16 autocast against fp32;
#   3. K concurrent runs on one GPU (runs/hour, aggregate img/s);
#   4. the default grid (experiments/default.toml) packed on the GPU, evaluation included.
# Inputs carried beside the tree: .devdata/fashion-mnist/*.gz (the Debian copy),
# .whl/ (pyDOE3, prdc, mlxtend wheels) and optionally .devcache/ (classifier weights).
# Outputs go to $OUT. DEVICE=cpu STEPS=20 runs the same script here as a dry check.
set -uo pipefail
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
PACKS=${PACKS:-"1 4 8 16"}
GRID_WORKERS=${GRID_WORKERS:-12}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
PY=${PY:-python3}

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=$PWD:/tmp/site
fi
export ABLATE_DATA=${ABLATE_DATA:-/tmp/ablate-data} ABLATE_OFFLINE=1
export ABLATE_CACHE=${ABLATE_CACHE:-$PWD/.devcache}
mkdir -p "$ABLATE_DATA/FashionMNIST/raw"
for f in .devdata/fashion-mnist/*.gz; do
  gunzip -c "$f" > "$ABLATE_DATA/FashionMNIST/raw/$(basename "$f" .gz)"
done
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
nproc

echo "== 1. trainer vs pytorch/examples loop =="
timeout 150 $PY benchmarks/bench_train.py --device "$DEVICE" --steps "$STEPS" --rounds 2 \
  --workers 0 4 2>&1 | tee "$OUT/bench_train.txt"

echo "== 2. bf16 autocast (ngf=64, 28x28) =="
for prec in fp32 bf16; do
  timeout 45 $PY -m ablate train --dataset fashion-mnist --steps "$STEPS" --hacks builtin \
    --ngf 64 --ndf 64 --device "$DEVICE" --precision $prec --no-eval --log-every 50 \
    --out "/tmp/prec-$prec" > /dev/null 2>&1
  $PY -c "import json; r=json.load(open('/tmp/prec-$prec/result.json')); \
print('$prec', r['status'], round(r['images_per_s']), 'img/s')"
done 2>&1 | tee "$OUT/bf16.txt"

echo "== 3. packed runs on one device =="
timeout 150 $PY benchmarks/bench_pack.py --device "$DEVICE" --packs $PACKS --steps "$STEPS" \
  --threads 1 2>&1 | tee "$OUT/pack.txt"

echo "== 4. default grid packed on the device =="
start=$(date +%s)
timeout 200 $PY -m ablate grid experiments/default.toml --results-dir /tmp/grid-gpu \
  --workers "$GRID_WORKERS" --threads 1 --device "$DEVICE" --no-progress 2>&1 | tail -25 \
  | tee "$OUT/grid.txt"
end=$(date +%s)
$PY -m ablate status experiments/default.toml --results-dir /tmp/grid-gpu 2>&1 | tail -20 \
  | tee -a "$OUT/grid.txt"
echo "grid wall: $((end - start)) s" | tee -a "$OUT/grid.txt"
cp /tmp/grid-gpu/REPORT.md "$OUT/REPORT-gpu.md" 2>/dev/null
cp /tmp/grid-gpu/tables/effects.md "$OUT/effects-gpu.md" 2>/dev/null
true
