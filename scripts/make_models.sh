#!/usr/bin/env bash
# Re-train the shipped checkpoints from the shared data with their recorded settings, then ship them
# (frozen-layer dtype by measurement, Markdown card, registry sha256) into src/llm4seg/weights/.
#
#   bash scripts/make_models.sh [busi|ct|generalist|all]      (make models; DATA=../shared/data RUNS=runs THREADS=2)
#
# SHIP=0 trains without touching src/llm4seg/weights; TRAIN=0 only evaluates and ships finished runs;
# BUSI_SCHEDULE / CT_SCHEDULE / CT_TRAIN_Z / CT_TEST_Z override the recorded schedule and z-ranges (the test
# suite runs the same recipe for two steps on a tiny copy of the data this way).
#
# On a 2-core CPU: busi-lesion ≈ 25 min, ct-liver ≈ 10 min, generalist ≈ 45 min. Interrupted runs continue with the same command
# (the training state next to the checkpoint is picked up with --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-2}
SHIP=${SHIP:-1}
TRAIN=${TRAIN:-1}
BUSI_SCHEDULE=${BUSI_SCHEDULE:---epochs 14}
CT_SCHEDULE=${CT_SCHEDULE:---epochs 40}
GENERALIST_SCHEDULE=${GENERALIST_SCHEDULE:---steps 4000}
CT_TRAIN_Z=${CT_TRAIN_Z:-0,72}
CT_TEST_Z=${CT_TEST_Z:-72,119}
which=${1:-all}
mkdir -p "$RUNS"

train() {  # OUT then the training arguments; resumes when a state file is there
    local out=$1; shift
    [ "$TRAIN" = 1 ] || return 0
    if [ -f "${out%.safetensors}.train-state.safetensors" ]; then
        "$PY" -m llm4seg train "$@" --resume "$out" --threads "$THREADS"
    else
        "$PY" -m llm4seg train "$@" --out "$out" --threads "$THREADS"
    fi
}

if [ "$which" = busi ] || [ "$which" = all ]; then
    # BUSI (452 pairs), seeded 20 % validation split for model selection.
    # shellcheck disable=SC2086
    train "$RUNS/busi-lesion.safetensors" "$DATA/busi" --size 128 $BUSI_SCHEDULE --batch-size 8 --seed 0
    [ "$SHIP" = 1 ] && "$PY" scripts/ship_checkpoint.py "$RUNS/busi-lesion.safetensors" --name busi-lesion --default \
        --task "breast ultrasound lesion" --classes lesion --description "Breast-ultrasound lesion segmentation \
(BUSI). CMUNeXt + frozen SmolLM2-135M layer 15 (rope, causal), 1-channel input at 128x128. Trained with \
'bash scripts/make_models.sh busi', i.e. llm4seg train ../shared/data/busi --size 128 --epochs 14 --batch-size 8 \
--seed 0 (paper recipe: SGD 0.01, momentum 0.9, wd 1e-4, poly 0.9, flips+rot90, BCE+Dice) on 362 of the 452 BUSI \
pairs, validated on the other 90 (seeded 20% split, seed 0); the best weights by validation IoU are kept. \
Data: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, Dataset of breast ultrasound images, Data in Brief 28 (2020) \
104863. Intended use: a starting point for interactive segmentation and fine-tuning of breast lesions in B-mode \
ultrasound, for research. Limits: a 14-epoch CPU schedule at 128x128, far from the paper's 300 epochs at 256x256; \
validated on one split of one dataset; it is not a CT model; not for clinical use."
fi

if [ "$which" = ct ] || [ "$which" = all ]; then
    # 3D-IRCADb-01 patient 17: liver (+ tumour) trained on slices z 0–71, scored on z 72–118.
    # shellcheck disable=SC2086
    train "$RUNS/ct-liver.safetensors" "$DATA/ircad17" --classes liver=1+2 --window abdomen --z-range "$CT_TRAIN_Z" \
        --size 128 $CT_SCHEDULE --batch-size 8 --seed 0
    "$PY" -m llm4seg evaluate "$DATA/ircad17" --checkpoint "$RUNS/ct-liver.safetensors" --classes liver=1+2 \
        --z-range "$CT_TEST_Z" --json > "$RUNS/ct-liver.heldout.json"
    cat "$RUNS/ct-liver.heldout.json"
    [ "$SHIP" = 1 ] && "$PY" scripts/ship_checkpoint.py "$RUNS/ct-liver.safetensors" --name ct-liver --task "CT liver (starting point)" \
        --classes liver --images sample_data/ircad17_ct.nii.gz --metrics "$RUNS/ct-liver.heldout.json" \
        --description "CT liver segmentation trained on ONE patient: a starting point for fine-tuning on your own \
scans, not a general liver model. CMUNeXt + frozen SmolLM2-135M layer 15, 1-channel input at 128x128, abdomen \
window (level 40, width 400). Trained with 'bash scripts/make_models.sh ct', i.e. llm4seg train ../shared/data/ircad17 \
--classes liver=1+2 --window abdomen --z-range 0,72 --size 128 --epochs 40 --batch-size 8 --seed 0 (paper recipe) \
on the axial slices z 0-71 of 3D-IRCADb-01 patient 17 (liver and liver tumour as one class; 20% of those slices \
for model selection), and scored on the held-out slices z 72-118 (metrics heldout_*). Data: IRCAD, 3D-IRCADb-01 \
database (research and education use, with citation of IRCAD). Limits: one contrast-enhanced scan of one patient; \
expect errors on other scanners, phases and anatomy; fine-tune it on a few labelled slices of your own data; \
not for clinical use."
fi
if [ "$which" = generalist ] || [ "$which" = all ]; then
    # 3-channel generalist: BUSI + ISIC 2018 + CVC-ClinicDB + TG3K (train_*, val_*) + ircad17 liver z 0-71,
    # balanced per dataset; CVC-ColonDB, the hippocampus and ircad17's other structures are never used.
    out="$RUNS/generalist.safetensors"
    if [ "$TRAIN" = 1 ]; then
        # shellcheck disable=SC2086
        if [ -f "${out%.safetensors}.train-state.safetensors" ]; then
            "$PY" scripts/train_generalist.py --data "$DATA" --out "$out" --threads "$THREADS" --resume $GENERALIST_SCHEDULE
        else
            "$PY" scripts/train_generalist.py --data "$DATA" --out "$out" --threads "$THREADS" $GENERALIST_SCHEDULE
        fi
    fi
    if [ "$SHIP" = 1 ]; then  # held-out scores for the card: frames and slices no training step saw
        grep '^test_' "$DATA/tg3k/list.txt" > "$RUNS/tg3k_test.txt"
        ev() { "$PY" -m llm4seg evaluate "$@" --checkpoint "$out" --no-hd95 --json; }
        ev "$DATA/tg3k" --list "$RUNS/tg3k_test.txt" > "$RUNS/generalist.tg3k_test.json"
        ev "$DATA/cvc_colondb" > "$RUNS/generalist.colondb.json"
        ev "$DATA/ircad17" --classes liver=1+2 --window abdomen --z-range 72,119 > "$RUNS/generalist.ircad17_z72.json"
        "$PY" scripts/ship_checkpoint.py "$out" --name generalist --task "any modality (starting point, RGB)" \
            --classes foreground --reference-llm --images sample_data/busi/images \
            --metrics "tg3k_test=$RUNS/generalist.tg3k_test.json" "colondb=$RUNS/generalist.colondb.json" \
            "ircad17_liver_z72_118=$RUNS/generalist.ircad17_z72.json" --description "$(cat scripts/generalist_card.txt)"
    fi
fi
exit 0
