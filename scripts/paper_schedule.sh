#!/usr/bin/env bash
# The paper's schedule (300 epochs, 256², SGD + poly, batch 8) for the shipped models' data on one CUDA GPU,
# then what only a GPU can check: tests/test_cuda.py and the GPU rows of the benchmarks.
#
#   here:  python scripts/paper_schedule.py pack [--tasks busi polyp]   (→ .gpu/: the splits, preprocessed)
#   there: bash scripts/paper_schedule.sh [--tasks busi:jitter=1 polyp:jitter=1 ...]
#          (OUT: results folder; BUDGET_S: training seconds; CHECKS=0 skips the CUDA tests and benchmarks)
#
# Writes one checkpoint per run ($OUT/busi-lesion-paper.safetensors, polyp-paper-jitter1.safetensors, ...),
# $OUT/metrics.json and logs; several runs train side by side on CUDA streams.
# Needs only the GPU machine's own python3 (torch, transformers, numpy, safetensors, scipy, scikit-image, Pillow).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-runs/paper}
PACK=${PACK:-.gpu}
SITE=${SITE:-/tmp/llm4seg-site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$PWD/$PACK/site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/log.txt"
$PY scripts/paper_schedule.py unpack-llm --data "$PACK" --site "$SITE" 2>&1 | tee -a "$OUT/log.txt"
$PY scripts/paper_schedule.py train --data "$PACK" --out "$OUT" --budget-s "${BUDGET_S:-360}" "$@" 2>&1 \
    | tee -a "$OUT/log.txt"
if [ "${CHECKS:-1}" = 1 ]; then
    timeout 75 $PY -m pytest -q -p no:cacheprovider --noconftest tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt"
    timeout 90 $PY -m benchmarks --quick --only forward,finetune --device cuda --out /tmp/llm4seg-bench 2>&1 \
        | tee "$OUT/bench.txt"
fi
