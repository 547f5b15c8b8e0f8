#!/usr/bin/env bash
# gpu_check.sh: the prepared check for a machine with one NVIDIA GPU, about 10 minutes.
#
# Usage: scripts/gpu_check.sh [OUT]   (OUT defaults to $OUT, else gpu_check/; run from the
# repository root with the package installed; DATA_DIR may hold the CIFAR-10 python files,
# default ~/data)
#
# What it runs, in order, each step bounded by `timeout` (worst case ~11 min, typically ~8):
#   1. the device: nvidia-smi, and torch's view of CUDA (version, device, memory)  (~10 s)
#   2. the CUDA benchmark: benchmarks/bench_losses.py --device cuda, with a 120 s budget
#      over the loss families (bench_sharpness.py is CPU only and is not run)     (<= 3 min)
#   3. the main job, simclr_digits --preset gpu cut to 300 steps and one seed      (<= 2 min)
#   4. every other experiment's gpu preset, 20 steps, one seed, the smallest grid it accepts:
#      the paper-scale model, loss, optimizer and batch on the GPU                 (<= 45 s each)
# Without CIFAR-10 under DATA_DIR, steps 3-4 train on random images written in the CIFAR-10
# format (OUT/fake-data): timings and code paths only, the accuracies mean nothing.
#
# What it writes under OUT: device.txt, bench/ (bench_losses.json, .png), runs/ (one run
# folder per experiment: config.json, metrics.jsonl, results.json, figures/), a log per
# step in logs/, and summary.txt (each step's exit status and seconds; rc=124: cut by its
# timeout, the run folder holds what it reached).
set -euo pipefail

OUT_DIR="${1:-${OUT:-gpu_check}}"
DATA_DIR="${DATA_DIR:-$HOME/data}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/runs"
SUMMARY="$OUT_DIR/summary.txt"
: >"$SUMMARY"

# step NAME SECONDS COMMAND...: run COMMAND under `timeout`, log it, record status and time
step() {
    local name="$1" seconds="$2"
    shift 2
    local start=$SECONDS rc=0
    echo "== $name (at most ${seconds} s): $*"
    timeout "$seconds" "$@" >"$OUT_DIR/logs/$name.log" 2>&1 || rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$SUMMARY"
}

# preset EXPERIMENT SECONDS [--set KEY=VALUE ...]: the experiment's gpu preset, bounded
preset() {
    local name="$1" seconds="$2"
    shift 2
    step "$name" "$seconds" "$PYTHON" -m amcl_lab run "$name" --preset gpu --device cuda \
        --data-dir "$DATA_DIR" --out "$OUT_DIR/runs" --quiet --set seeds=1 "$@"
}

{
    nvidia-smi
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda);
p = torch.cuda.get_device_properties(0); print(p.name, round(p.total_memory / 2**30, 1), "GiB")'
} | tee "$OUT_DIR/device.txt"

step bench_losses 180 "$PYTHON" benchmarks/bench_losses.py --device cuda \
    --out "$OUT_DIR/bench" --budget-seconds 120 --worker-timeout 90

if [ ! -d "$DATA_DIR/cifar-10-batches-py" ]; then
    DATA_DIR="$OUT_DIR/fake-data"
    echo "no CIFAR-10 found: writing random images in its format to $DATA_DIR"
    "$PYTHON" -c 'import sys; sys.path.insert(0, "tests"); from pathlib import Path
from data_files import make_cifar10
make_cifar10(Path(sys.argv[1]), 1024, tuple(i % 10 for i in range(1000)))' "$DATA_DIR"
fi

preset simclr_digits 120 --set steps=300 --set eval_every=150
preset amcl 45 --set steps=20 --set family_counts=5
preset amcl_phase 45 --set steps=20 --set modes=topk --set betas=0.0001 --set clips=1.0 \
    --set head_counts=3
preset hardness 45 --set steps=20 --set temperatures=0.07,0.3
preset projector 45 --set steps=20 --set dims=256,1024
preset sharpness 45 --set steps=20 --set optimizers=sgd,saf --set timing_rounds=20
preset simplex 45 --set steps=20 --set noise_levels=0.0,0.5,1.0
preset temperature 45 --set steps=20 --set temperatures=0.07,0.3,1.0
preset views 45 --set steps=20 --set view_counts=2 --set fractions=1.0

echo "== done; summary in $SUMMARY"
cat "$SUMMARY"
