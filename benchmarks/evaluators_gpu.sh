#!/usr/bin/env bash
# The evaluators benchmark (issue 4, docs/evaluators.md) on one CUDA machine, all parts at once:
#   * more seeds of the 4-epoch stand-alone ground truth of the stratified 20 (WORKERS processes of
#     `evaluators_ranking.py --part standalone --device cuda`, sharing the arch list through claim files;
#     one CSV row per finished arch and seed, as on the CPU);
#   * supernets trained by `python -m searchers.distributed supernet --device cuda` (the default
#     mobile-unified recipe with --epochs changed; one process each), each then scored on the 40 archs
#     (`--part supernet --device cuda`);
#   * a short `python -m searchers.train --device cuda --amp` run (the CUDA path of the trainer).
# Everything runs beside everything else, each process with 1 CPU thread; after BUDGET seconds every
# training still running is stopped (finished rows and supernets are kept), supernets are scored, and
# the results land in $OUT (results.tgz: logs, the stand-alone CSV, score files, supernet info; plus
# the finished supernets' weights as fp16 state dicts).  The CPU rehearsal:
#   OUT=/tmp/o DEVICE=cpu BUDGET=60 WORKERS=1 GT_ARGS="--gt-recipe 5k" SEEDS=9 SN_ARGS="--images-per-epoch 640" \
#     bash benchmarks/evaluators_gpu.sh
set -u
cd "$(dirname "$0")/.."           # the repo root: PYTHONPATH and the benchmark's relative paths
OUT=${OUT:?set OUT to the results folder}
BUDGET=${BUDGET:-380}          # seconds of training before everything still training is stopped
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-11}
GT_ARGS=${GT_ARGS:---gt-recipe 32k --epochs 4}
SEEDS=${SEEDS:-1,2,3}
SN_ARGS=${SN_ARGS:-}           # extra supernet options (the rehearsal's tiny epochs)
SUPERNETS=${SUPERNETS-"s9-gpu-3k-s0:--epochs 3 --seed 0|s9-gpu-3k-s1:--epochs 3 --seed 1 --data-seed 0|s9-gpu-9k-s0:--epochs 9 --seed 0"}
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
W=${EDGENAS_GPU_WORK:-/tmp/edgenas_gpu}   # scratch: removed first, so only a folder this script made
if [ -e "$W" ] && [ ! -f "$W/.edgenas_gpu" ]; then echo "error: $W exists and is not this script's scratch folder; allowed: a new path in EDGENAS_GPU_WORK" >&2; exit 2; fi
rm -rf "$W" "${TMPDIR:-/tmp}/edgenas_ranking_claims"
mkdir -p "$W/logs" "$OUT" && touch "$W/.edgenas_gpu"
export EDGENAS_CACHE=$W/cache
T0=$(date +%s)
log() { echo "$(date -u +%H:%M:%S) [+$(( $(date +%s) - T0 ))s] $*" | tee -a "$W/logs/main.log"; }
pids=()
nets=(); [ -n "$SUPERNETS" ] && IFS='|' read -r -a nets <<< "$SUPERNETS"
finish() {
    for p in "${pids[@]}"; do kill -- "$p" 2>/dev/null; done    # a killed script stops its jobs first
    cp benchmarks/data/standalone_fashion_mnist.csv "$W/standalone_fashion_mnist.csv"
    mkdir -p "$W/scores"
    for spec in "${nets[@]}"; do t=${spec%%:*}; cp benchmarks/data/*_"$t".json benchmarks/data/*_"$t"-partial.json "$W/scores/" 2>/dev/null; done
    for d in "$W"/sn-*; do [ -f "$d/info.json" ] && cp "$d/info.json" "$W/scores/info-$(basename "$d").json"; done
    nvidia-smi > "$W/logs/nvidia-smi-end.txt" 2>&1
    tar -C "$W" -czf "$OUT/results.tgz" logs scores standalone_fashion_mnist.csv
    log "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}
trap finish EXIT

log "machine: $(nproc --all) cpus, $(free -g | awk '/Mem/{print $2}') GiB; GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$W/logs/main.log"
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    # MPS lets the many small processes' kernels share the GPU at once instead of taking turns
    export CUDA_MPS_PIPE_DIRECTORY=$W/mps CUDA_MPS_LOG_DIRECTORY=$W/logs/mps
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && timeout 40 $PY -c "import torch; assert torch.ones(2, device='cuda').sum().item() == 2"; then
        log "MPS on"
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null; sleep 1
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        log "MPS did not start; the processes take turns on the GPU"
    fi
fi

for k in $(seq 0 $((WORKERS - 1))); do
    timeout "$BUDGET" $PY benchmarks/evaluators_ranking.py --part standalone --sample stratified-macs $GT_ARGS \
        --train-seeds "$SEEDS" --device "$DEVICE" --worker "$k/$WORKERS" > "$W/logs/gt$k.log" 2>&1 &
    pids+=($!)
done
log "started $WORKERS stand-alone workers (seeds $SEEDS, $GT_ARGS)"

supernet() {   # tag, options: train with a budget, then score the 40 archs (a stopped run: its last checkpoint)
    local tag=$1; shift
    timeout "$BUDGET" $PY -m searchers.distributed supernet --device "$DEVICE" --no-progress --threads 1 \
        --out "$W/sn-$tag" $SN_ARGS "$@" > "$W/logs/sn-$tag.log" 2>&1
    log "supernet $tag: training exit $? ($(tail -c 300 "$W/logs/sn-$tag.log" | tail -1))"
    local ck=$W/sn-$tag/supernet.pt
    if [ ! -f "$ck" ] && [ -f "$W/sn-$tag/checkpoint.pt" ]; then ck=$W/sn-$tag/checkpoint.pt; tag=$tag-partial; fi
    [ -f "$ck" ] || return
    timeout 120 $PY benchmarks/evaluators_ranking.py --part supernet --sample uniform,stratified-macs \
        --checkpoint "$ck" --tag "$tag" --device "$DEVICE" > "$W/logs/score-$tag.log" 2>&1
    log "supernet $tag: scoring exit $? ($(tail -1 "$W/logs/score-$tag.log"))"
    $PY - "$ck" "$OUT/$tag.fp16.pt" <<'EOF' 2>&1 | tee -a "$W/logs/main.log"
import sys, torch
s = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
keep = {k: s[k] for k in ("meta", "recipe", "seed", "data", "space", "train_seconds", "world", "step") if k in s}
keep["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in s["model"].items()}
keep["note"] = "fp16 copy of the float32 weights (the scores in results.tgz are of the float32 ones)"
torch.save(keep, sys.argv[2])
EOF
}
for spec in "${nets[@]}"; do
    supernet "${spec%%:*}" ${spec#*:} &
    pids+=($!)
done
log "started ${#nets[@]} supernet(s)"

# the CUDA path of the trainer (AMP, channels-last), short
if [ "$DEVICE" = cuda ] && [ "${TRAIN_CHECK:-1}" = 1 ]; then
    timeout "$BUDGET" $PY -m searchers.train --arch mobilenet_v3_small --device cuda --amp --epochs 1 \
        --train-images 8192 --eval-images 2000 --formats pt,onnx --latency-rounds 0 --threads 1 --no-progress \
        --out "$W/train-cuda" > "$W/logs/train-cuda.log" 2>&1
    log "searchers.train --device cuda --amp: exit $? ($(tail -1 "$W/logs/train-cuda.log"))"
fi
while sleep "${POLL:-30}"; do
    n=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
    rows=$(grep -c '""epochs"": 4' benchmarks/data/standalone_fashion_mnist.csv)
    log "$n job(s) running; 4-epoch rows in the CSV: $rows; $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
    [ "$n" = 0 ] && break
done
for p in "${pids[@]}"; do wait "$p"; rc=$?; [ "$rc" = 0 ] || log "job $p ended with exit $rc (124: stopped at BUDGET)"; done
pids=()
log "done"
