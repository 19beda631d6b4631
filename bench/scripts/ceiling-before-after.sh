#!/usr/bin/env bash
# Issue 6's before/after in one run: the verify-cost curve (`bench --calibrate`) repeated
# REPS times per model, alternating models. Each run times, in the same process and
# interleaved, a k-token batch verified the way llama.cpp does it (logits for every
# position: "before"), with logits for the last position only (llama.cpp's cheapest batch,
# not enough to verify a draft), and through Tandem's lazy head ("after"); the oracle
# ceiling at draft length k-1 is k / (batch cost / one plain step).
#
#   bench/scripts/ceiling-before-after.sh [REPS] [MAX_K] [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-3}
max_k=${2:-32}
out=${3:-bench/results/ceiling}
mkdir -p "$out"
cargo build --release --bin tandem
for r in $(seq 1 "$reps"); do
    for m in smollm2-135m gemma3-270m; do
        echo "run $r: $m" >&2
        target/release/tandem bench --calibrate -m "$m" --depth 256 --max-k "$max_k" --reps 3 \
            --json "$out/$m-$r.json" > /dev/null
    done
done
python3 bench/scripts/ceiling-table.py "$out"
