#!/usr/bin/env bash
# One session on a lent GPU, prepared to run unattended and to write everything under one folder:
#   1. resume every photo model from training-state/<name>/ (or its served checkpoint) for
#      MINUTES_PER_MODEL minutes of training each on CUDA, without publishing (the served checkpoints
#      change only through the evaluation-backed step of docs/model-report.md), then copy the states
#      and their learning curves into the output folder;
#   2. run the benchmark with --device cuda (bench/run.py);
#   3. run the tests that use CUDA (those skipped on a CPU-only machine).
#
#   bench/gpu_session.sh [OUT_DIR]          # default: gpu-session-<UTC time>
#   MINUTES_PER_MODEL=8 DATA_DIR=../shared/datasets THREADS=4 bench/gpu_session.sh "$OUT"
#
# Bring back OUT_DIR/training-state/ into training-state/ and commit it: that is the accumulated
# training. Each step writes its log beside its results; a failed step does not stop the later ones,
# and the script exits non-zero if any failed (summary.txt says which).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-gpu-session-$(date -u +%Y%m%dT%H%M%SZ)}
data=${DATA_DIR:-../shared/datasets}
minutes=${MINUTES_PER_MODEL:-8}
threads=${THREADS:-4}
models=${PHOTO_MODELS:-"photo-denoise-gray photo-denoise-color"}
mkdir -p "$out"
: >"$out/summary.txt"

step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record the outcome
    local name=$1
    shift
    local began=$SECONDS
    echo "== $name: $*" | tee -a "$out/summary.txt"
    "$@" >"$out/$name.log" 2>&1
    local code=$?
    echo "   exit $code after $((SECONDS - began)) s" | tee -a "$out/summary.txt"
    return $code
}

failed=0
step environment bash -c 'date -u; nvidia-smi; python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))"' || {
    echo "no usable CUDA device: nothing else is run" | tee -a "$out/summary.txt"
    exit 1
}

for name in $models; do
    step "train-$name" python -m models.train "$name" --data-dir "$data" --minutes "$minutes" --device cuda \
        --threads "$threads" --state-dir training-state --publish never || failed=1
done
mkdir -p "$out/training-state"
cp -r training-state/. "$out/training-state/"
step learning-curves python -m models.training.curves --state-dir training-state --out "$out" || failed=1

cp docs/benchmarks.md "$out/benchmarks.md"  # bench.run replaces the generated part and keeps the analysis
step benchmark python -m bench.run --data-dir "$data/mnist" --device cuda --out "$out/benchmarks.md" || failed=1

step tests-cuda python -m pytest -q -p no:cacheprovider -k cuda tests/models tests/app || failed=1

echo "done: $out (failed steps: $failed)" | tee -a "$out/summary.txt"
exit $failed
