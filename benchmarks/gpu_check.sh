#!/usr/bin/env bash
# The prepared GPU check (issue 10: fused multi-run training). ONE script, at most ~9.5
# minutes on one H100/H200, no network. Every stage is time-boxed (its whole process
# group is killed at its limit, so no stray process skews the next stage); a failed
# stage does not stop the next; everything goes to $OUT/gpu_check.log.
#
#   1. fused scaling: aggregate img/s of fused K = 1..64 at 28x28, width 32, batch 64,
#      against a lone run and 16 packed processes on the same GPU; step time, memory;
#   2. execution options at K = 64: CUDA graph, torch.compile, NCHW, TF32 off, bf16,
#      cudnn.benchmark (each against stage 1's eager figure);
#   3. numeric settings: does TF32 or bf16 change FID or a hack's contrast beyond the
#      seed spread? (benchmarks/fused_precision.py);
#   4. experiments/fashion-mnist.toml end to end through the fused path
#      (benchmarks/fused_experiment.py) at a scaled budget, with the full-budget
#      projection; classifier features only (the Inception file, 87 MB, cannot travel).
#
# Before the device call, here, once:   bash benchmarks/gpu_check.sh --prepare
#   (copies Fashion-MNIST into .devdata/ and the cached classifier into .devcache/, and
#   adds both to .git/info/exclude); then call the device tool with
#   carry [".devdata", ".devcache"] and command `bash benchmarks/gpu_check.sh`.
# CPU-safe parts, tiny sizes, here:     bash benchmarks/gpu_check.sh --cpu-smoke
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
case "${1:-}" in
  --prepare)
    mkdir -p .devdata/fashion-mnist .devcache
    cp /usr/share/datasets/fashion-mnist/*.gz .devdata/fashion-mnist/ \
      || echo "no /usr/share/datasets/fashion-mnist: the GPU stages fall back to fake data"
    src=${ABLATE_CACHE:-$HOME/.cache/ablate/cache}
    if [ -d "$src/classifier" ]; then
      mkdir -p .devcache/classifier
      cp "$src"/classifier/fashion-mnist-*.pt "$src"/classifier/fashion-mnist-*.json .devcache/classifier/ 2>/dev/null
    fi
    excl="$(git rev-parse --git-common-dir)/info/exclude"  # ignored, so they travel only if carried
    mkdir -p "$(dirname "$excl")"
    for p in /.devdata/ /.devcache/; do
      grep -qxF "$p" "$excl" 2>/dev/null || echo "$p" >> "$excl"
    done
    du -sh .devdata .devcache
    exit 0 ;;
  --cpu-smoke) MODE=cpu ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --cpu-smoke]" >&2; exit 2 ;;
esac

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
TOTAL=${TOTAL:-570}  # seconds for all stages (the device call allows 600)
START=$(date +%s)
DEADLINE=$((START + TOTAL))
PY=${PY:-python3}
[ "$MODE" = cpu ] && [ -x .venv/bin/python ] && PY=${PY_SMOKE:-.venv/bin/python}
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# stage NAME SECONDS COMMAND...: run COMMAND in its own process group, kill the group at
# the limit (or at the global deadline), log its exit status.
stage() {
  local name=$1 secs=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) ))
  (( secs > left )) && secs=$left
  if (( secs < 15 )); then log "== $name: skipped, ${left}s left"; return; fi
  log "== $name (limit ${secs}s) =="
  set -m
  ( "$@" ) >>"$LOG" 2>&1 &
  local pid=$! t0; t0=$(date +%s)
  set +m
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) - t0 >= secs )); then
      log "!! $name: time limit reached, killing its process group"
      kill -TERM -- "-$pid" 2>/dev/null; sleep 5; kill -KILL -- "-$pid" 2>/dev/null
      break
    fi
    sleep 1
  done
  wait "$pid"; local rc=$?
  log "== $name: exit $rc after $(( $(date +%s) - t0 ))s"
}

# ---------------------------------------------------------------- environment --------
export ABLATE_OFFLINE=1
export ABLATE_DATA=${ABLATE_DATA:-/tmp/ablate-data}
if [ -d .devcache ]; then export ABLATE_CACHE=${ABLATE_CACHE:-$REPO/.devcache}; fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
if [ "$MODE" = gpu ]; then
  log "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
  if ls .whl/*.whl >/dev/null 2>&1; then  # optional: packages missing on the device
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      >>"$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
  fi
  DEVICE=cuda
  DATASET=fashion-mnist
  if ls .devdata/fashion-mnist/*.gz >/dev/null 2>&1; then
    mkdir -p "$ABLATE_DATA/FashionMNIST/raw"
    for f in .devdata/fashion-mnist/*.gz; do
      gunzip -c "$f" > "$ABLATE_DATA/FashionMNIST/raw/$(basename "$f" .gz)"
    done
  elif [ ! -d /usr/share/datasets/fashion-mnist ]; then
    DATASET=fake; log "no Fashion-MNIST carried (.devdata/): stages 1-3 use fake 28x28 data, stage 4 is skipped"
  fi
  KS="1 2 4 8 16 32 64"; KOPT=64; STEPS=150; PACK=16; NGF=32
  PREC_ARGS="--seeds 2 --steps 1000 --n 2000"
  E2E="experiments/fashion-mnist.toml"; STEPS_SCALE=0.05
  E2E_ARGS="--steps-scale $STEPS_SCALE --workers 4 --threads 4"; FUSE_ARGS="--workers 2 --threads 4"
  B1=170; B2=150; B3=100; B4=400
else
  DEVICE=cpu; DATASET=fake; KS="1 2"; KOPT=2; STEPS=8; PACK=2; NGF=8; THREADS=1
  PREC_ARGS="--seeds 2 --steps 8 --n 200 --ngf 8 --settings fp32 bf16 --threads 1"
  E2E=$OUT/smoke.toml
  cat > "$E2E" <<'EOF'
seeds = [0]
[data]
dataset = "fake"
[model]
ngf = 8
ndf = 8
[budget]
steps = 20
batch_size = 32
log_every = 10
[evaluation]
features = ["classifier"]
n = 200
kid_subset_size = 100
kid_subsets = 5
val_every = 10
val_n = 200
[design]
kind = "leave-one-out"
[hacks]
scope = ["batch-norm", "adam-dcgan"]
EOF
  STEPS_SCALE=0.5; E2E_ARGS="--steps-scale $STEPS_SCALE --workers 1 --threads 1"
  FUSE_ARGS="--fuse 2 --workers 1 --threads 1"
  B1=300; B2=300; B3=300; B4=300; TOTAL=1500; DEADLINE=$((START + TOTAL))
fi
log "mode=$MODE device=$DEVICE dataset=$DATASET python=$PY"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'threads', torch.get_num_threads())" \
  2>&1 | tee -a "$LOG"
nproc | tee -a "$LOG"
BENCH=(benchmarks/bench_fused.py --device "$DEVICE" --dataset "$DATASET" --ngf "$NGF" --steps "$STEPS")
[ -n "${THREADS:-}" ] && BENCH+=(--threads "$THREADS")

# ---------------------------------------------------------------- stages -------------
stage "1. fused scaling (eager, fp32 weights, PyTorch default TF32 convolutions)" $B1 \
  $PY "${BENCH[@]}" --ks $KS --pack $PACK --json "$OUT/scaling.json"

LONE=$($PY -c "import json; print(json.load(open('$OUT/scaling.json'))['lone_img_s'])" 2>/dev/null || echo "")
if [ -n "$LONE" ]; then
  opt_stage() {  # one execution option at K=$KOPT, its ratio against the lone run of stage 1
    local tag=$1; shift
    $PY "${BENCH[@]}" --ks $KOPT --no-lone --lone-img-s "$LONE" --json "/tmp/opt-$tag.json" "$@" \
      || echo "option $tag failed"
  }
  options() {
    opt_stage cuda_graph --cuda-graph
    opt_stage nchw --nchw
    opt_stage no_tf32 --no-tf32
    opt_stage bf16 --precision bf16
    opt_stage cudnn_benchmark --cudnn-benchmark
    opt_stage compile --compile
  }
  if [ "$MODE" = cpu ]; then  # no CUDA here: the CPU-safe options only
    options() { opt_stage nchw --nchw; opt_stage bf16 --precision bf16; }
  fi
  stage "2. execution options at K=$KOPT" $B2 options
  $PY - "$OUT/options.json" /tmp/opt-*.json <<'EOF' 2>>"$LOG"
import json, sys
out = {p.split("opt-")[1][:-5]: json.load(open(p)) for p in sys.argv[2:]}
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
  rm -f /tmp/opt-*.json
else
  log "== 2. execution options: skipped (stage 1 gave no lone rate)"
fi

stage "3. numeric settings vs seed spread (fp32 / TF32 / bf16)" $B3 \
  $PY benchmarks/fused_precision.py --device "$DEVICE" --dataset "$DATASET" $PREC_ARGS \
  --json "$OUT/precision.json"

if [ "$DATASET" != fake ] || [ "$MODE" = cpu ]; then
  rm -rf /tmp/e2e
  left=$(( DEADLINE - $(date +%s) - 30 ))
  stage "4. $E2E end to end, fused ($E2E_ARGS)" $B4 \
    $PY benchmarks/fused_experiment.py "$E2E" --out /tmp/e2e --device "$DEVICE" \
    --features classifier --deadline-s $(( left > 60 ? left - 60 : 1 )) $E2E_ARGS
  cp /tmp/e2e/summary.json "$OUT/e2e_summary.json" 2>/dev/null
  cp /tmp/e2e/groups.jsonl "$OUT/e2e_groups.jsonl" 2>/dev/null
fi
# 5. The grid itself, fused: `ablate grid --fuse` (on a GPU the cap is measured from
# memory) on the same experiment at the same scaled budget, every run claimed and
# committed through the store; whatever time is left. Its index comes back in $OUT.
left=$(( DEADLINE - $(date +%s) - 20 ))
if (( left >= 45 )) && { [ "$DATASET" != fake ] || [ "$MODE" = cpu ]; }; then
  rm -rf /tmp/e2e-grid
  GRID_TOML=/tmp/e2e-grid.toml
  $PY - "$E2E" "$GRID_TOML" "$STEPS_SCALE" <<'EOF' 2>>"$LOG"
import re, sys
src, dst, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
text = open(src).read()
for key in ("steps", "val_every"):  # the same scaled budget as stage 4
    text = re.sub(rf"^({key}\s*=\s*)(\d+)", lambda m: m[1] + str(max(1, round(int(m[2]) * scale))),
                  text, flags=re.M)
text = re.sub(r'^features\s*=.*$', 'features = ["classifier"]', text, flags=re.M)
open(dst, "w").write(text)
EOF
  stage "5. the grid, fused (ablate grid $FUSE_ARGS)" $left \
    $PY -m ablate grid "$GRID_TOML" --results-dir /tmp/e2e-grid --no-progress --no-report $FUSE_ARGS
  $PY -m ablate status "$GRID_TOML" --results-dir /tmp/e2e-grid >>"$LOG" 2>&1
  cp /tmp/e2e-grid/runs.sqlite "$OUT/e2e_grid_runs.sqlite" 2>/dev/null
fi
log "done: $(ls "$OUT" | tr '\n' ' ')"
true
