#!/usr/bin/env bash
# Re-train the shipped checkpoints from the shared data with their recorded settings, then ship them
# (frozen-layer dtype by measurement, Markdown card, registry sha256) into src/llm4seg/weights/.
#
#   bash scripts/make_models.sh [busi|gray|ct|generalist|polyp|isic|thyroid|clicks|all]
#                                               (make models; DATA=../shared/data RUNS=runs THREADS=2)
#
# SHIP=0 trains without touching src/llm4seg/weights; TRAIN=0 only evaluates and ships finished runs;
# BUSI_SCHEDULE / GRAY_SCHEDULE / CT_SCHEDULE / GENERALIST_SCHEDULE / SPECIALIST_SCHEDULE / CT_TRAIN_Z / CT_TEST_Z override the
# recorded schedules and z-ranges (the test suite runs the same recipes for two steps on a tiny copy of the data
# this way). The specialists polyp and isic-lesion start from GENERALIST_INIT (the shipped generalist), thyroid from
# ULTRASOUND_INIT (the shipped busi-lesion).
#
# busi-lesion, polyp and isic-lesion ship their runs of the paper's schedule on a GPU when there
# ($RUNS/paper/busi-lesion-paper-jitter1, polyp-paper-jitter1, isic-lesion-paper .safetensors, written by
# scripts/paper_schedule.sh; BUSI_PAPER_RUN / POLYP_PAPER_RUN / ISIC_PAPER_RUN name others); otherwise the CPU recipe. On a 2-core CPU: busi-lesion ≈ 50 min, gray-start ≈ 18 min, ct-liver ≈ 10 min, generalist ≈ 50 min, isic ≈ 13 min, polyp (256²) ≈ 80 min, thyroid (256²) ≈ 95 min.
# Interrupted runs continue with the same command (the training state next to the checkpoint is picked up).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-2}
SHIP=${SHIP:-1}
TRAIN=${TRAIN:-1}
# The CPU recipe: AdamW 1e-3 (warm-up, cosine, batch 8, 128²), the best mean IoU of the recipe study over two BUSI
# folds (docs/models.md, Recipe study); the generalist keeps the 2e-3 it shipped with.
BUSI_SCHEDULE=${BUSI_SCHEDULE:---steps 4000 --lr 1e-3}
GRAY_SCHEDULE=${GRAY_SCHEDULE:---epochs 14}
CT_SCHEDULE=${CT_SCHEDULE:---epochs 40}
GENERALIST_SCHEDULE=${GENERALIST_SCHEDULE:---steps 4000 --jitter 1 --lr 2e-3}
SPECIALIST_SCHEDULE=${SPECIALIST_SCHEDULE:---lr 1e-3 --steps 1000 --val-every 250}
CLICKS_SCHEDULE=${CLICKS_SCHEDULE:---steps 3000 --val-every 500 --lr 1e-3 --jitter 1}
GENERALIST_INIT=${GENERALIST_INIT:-src/llm4seg/weights/generalist.safetensors}
ULTRASOUND_INIT=${ULTRASOUND_INIT:-src/llm4seg/weights/busi-lesion.safetensors}
CT_TRAIN_Z=${CT_TRAIN_Z:-0,72}
CT_TEST_Z=${CT_TEST_Z:-72,119}
which=${1:-all}
mkdir -p "$RUNS"

zoo() {  # OUT then train_zoo.py arguments; resumes when a state file is there
    local out=$1; shift
    [ "$TRAIN" = 1 ] || return 0
    if [ -f "${out%.safetensors}.train-state.safetensors" ]; then
        "$PY" scripts/train_zoo.py --data "$DATA" --out "$out" --threads "$THREADS" --resume "$@"
    else
        "$PY" scripts/train_zoo.py --data "$DATA" --out "$out" --threads "$THREADS" "$@"
    fi
}
ev() {  # held-out / own-validation scores for a card: llm4seg evaluate --json
    "$PY" -m llm4seg evaluate "$@" --no-hd95 --json
}

ship_scored() {  # NAME CHECKPOINT DATA-FOLDER VAL-LIST TASK CLASS [LABEL=DATA-FOLDER[:LIST-FILE]...] [-- SHIP-ARGS]:
    # ship a checkpoint (layer by reference), scored on its own validation list and the held-out sets
    local name=$1 run=$2 data=$3 list=$4 task=$5 class=$6 spec label; shift 6
    [ "$SHIP" = 1 ] || return 0
    ev "$data" --checkpoint "$run" --list "$list" > "$RUNS/$name.val.json"
    local metrics=("own_val=$RUNS/$name.val.json") extra=()
    while [ $# -gt 0 ]; do
        if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
        label=${1%%=*}; spec=${1#*=}; shift
        if [ "${spec#*:}" != "$spec" ]; then
            ev "${spec%%:*}" --checkpoint "$run" --list "${spec#*:}" > "$RUNS/$name.$label.json"
        else
            ev "$spec" --checkpoint "$run" > "$RUNS/$name.$label.json"
        fi
        metrics+=("$label=$RUNS/$name.$label.json")
    done
    "$PY" scripts/ship_checkpoint.py "$run" --name "$name" --task "$task" --classes "$class" --reference-llm \
        --images sample_data/busi/images --metrics "${metrics[@]}" --description "$(cat "scripts/cards/$name.txt")" \
        ${extra[@]+"${extra[@]}"}
}

train() {  # OUT then the training arguments; resumes when a state file is there
    local out=$1; shift
    [ "$TRAIN" = 1 ] || return 0
    if [ -f "${out%.safetensors}.train-state.safetensors" ]; then
        "$PY" -m llm4seg train "$@" --resume "$out" --threads "$THREADS"
    else
        "$PY" -m llm4seg train "$@" --out "$out" --threads "$THREADS"
    fi
}

busi_paper="${BUSI_PAPER_RUN:-$RUNS/paper/busi-lesion-paper-jitter1.safetensors}"
if { [ "$which" = busi ] || [ "$which" = all ]; } && [ -f "$busi_paper" ]; then
    # The shipped busi-lesion: the paper's schedule (300 epochs, 256²) + the jitter on a GPU; on the same 90
    # validation images +0.039 IoU over the CPU recipe below (docs/models.md), which a CPU-only machine trains.
    ship_scored busi-lesion "$busi_paper" "$DATA/busi" scripts/splits/busi-lesion.val.txt "breast ultrasound lesion" \
        lesion -- --default
elif [ "$which" = busi ] || [ "$which" = all ]; then
    # BUSI (452 pairs) from scratch, 1 channel; seeded 20 % validation split (its names: busi-lesion.val.busi.txt).
    out="$RUNS/busi-lesion.safetensors"
    # shellcheck disable=SC2086
    zoo "$out" --parts busi --channels 1 $BUSI_SCHEDULE
    if [ "$SHIP" = 1 ]; then
        "$PY" scripts/train_zoo.py --data "$DATA" --parts busi --channels 1 --out "$out" --val-lists-only
        ev "$DATA/busi" --checkpoint "$out" --list "$RUNS/busi-lesion.val.busi.txt" > "$RUNS/busi-lesion.val.json"
        "$PY" scripts/ship_checkpoint.py "$out" --name busi-lesion --default --task "breast ultrasound lesion" \
            --classes lesion --reference-llm --metrics "own_val=$RUNS/busi-lesion.val.json" \
            --description "$(cat scripts/cards/busi-lesion.txt)"
    fi
fi

if [ "$which" = gray ] || [ "$which" = all ]; then
    # A fine-tuning start for unseen gray modalities: BUSI, the paper recipe cut to 14 epochs (best by validation IoU
    # on the same 90 images as busi-lesion); it fine-tunes on MRI / CT slices better than busi-lesion does.
    out="$RUNS/gray-start.safetensors"
    # shellcheck disable=SC2086
    train "$out" "$DATA/busi" --size 128 $GRAY_SCHEDULE --batch-size 8 --seed 0
    if [ "$SHIP" = 1 ]; then
        ev "$DATA/busi" --checkpoint "$out" --list scripts/splits/busi-lesion.val.txt > "$RUNS/gray-start.val.json"
        "$PY" scripts/ship_checkpoint.py "$out" --name gray-start --task "gray MRI / CT (starting point)" \
            --classes foreground --reference-llm --metrics "own_val=$RUNS/gray-start.val.json" \
            --description "$(cat scripts/cards/gray-start.txt)"
    fi
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
            "$PY" scripts/train_zoo.py --data "$DATA" --out "$out" --threads "$THREADS" --resume $GENERALIST_SCHEDULE
        else
            "$PY" scripts/train_zoo.py --data "$DATA" --out "$out" --threads "$THREADS" $GENERALIST_SCHEDULE
        fi
    fi
    if [ "$SHIP" = 1 ]; then  # held-out scores for the card: frames and slices no training step saw
        grep '^test_' "$DATA/tg3k/list.txt" > "$RUNS/tg3k_test.txt"
        ev "$DATA/tg3k" --checkpoint "$out" --list "$RUNS/tg3k_test.txt" > "$RUNS/generalist.tg3k_test.json"
        ev "$DATA/cvc_colondb" --checkpoint "$out" > "$RUNS/generalist.colondb.json"
        ev "$DATA/ircad17" --checkpoint "$out" --classes liver=1+2 --window abdomen --z-range 72,119 \
            > "$RUNS/generalist.ircad17_z72.json"
        "$PY" scripts/ship_checkpoint.py "$out" --name generalist --task "any modality (starting point, RGB)" \
            --classes foreground --reference-llm --images sample_data/busi/images \
            --metrics "tg3k_test=$RUNS/generalist.tg3k_test.json" "colondb=$RUNS/generalist.colondb.json" \
            "ircad17_liver_z72_118=$RUNS/generalist.ircad17_z72.json" --description "$(cat scripts/cards/generalist.txt)"
    fi
fi
specialist() {  # NAME PART CLASS TASK [LABEL=EVALUATE-ARGS...]: one dataset, from INIT (default: the generalist);
    # EXTRA: more arguments
    local name=$1 part=$2 class=$3 task=$4; shift 4
    local out="$RUNS/$name.safetensors"
    # shellcheck disable=SC2086
    zoo "$out" --parts "$part" --init "${INIT:-$GENERALIST_INIT}" $SPECIALIST_SCHEDULE ${EXTRA:-}
    [ "$SHIP" = 1 ] || return 0
    "$PY" scripts/train_zoo.py --data "$DATA" --parts "$part" --out "$out" --val-lists-only
    ship_scored "$name" "$out" "$DATA/$part" "$RUNS/$name.val.$part.txt" "$task" "$class" "$@"
}
polyp_paper="${POLYP_PAPER_RUN:-$RUNS/paper/polyp-paper-jitter1.safetensors}"
if { [ "$which" = polyp ] || [ "$which" = all ]; } && [ -f "$polyp_paper" ]; then
    # The shipped polyp: the paper's schedule + the jitter on a GPU, from scratch (165 epochs, 256²); on
    # CVC-ColonDB, never trained on, +0.137 Dice over the CPU recipe below (docs/models.md).
    ship_scored polyp "$polyp_paper" "$DATA/cvc_clinicdb" scripts/splits/polyp.val.txt "colonoscopy polyp (RGB)" \
        polyp "colondb=$DATA/cvc_colondb"
elif [ "$which" = polyp ] || [ "$which" = all ]; then
    # the jitter (rotation/zoom/appearance) lifts CVC-ColonDB, a set it never saw, by +0.057 Dice, and 256² input
    # (small polyps keep their pixels) by +0.051 more (docs/models.md)
    EXTRA="--jitter 1 --size 256" specialist polyp cvc_clinicdb polyp "colonoscopy polyp (RGB)" "colondb=$DATA/cvc_colondb"
fi
if [ "$which" = isic ] || [ "$which" = all ]; then
    # held out: the 439 validation-split images beyond the 100 kept for model selection (never trained on).
    # The shipped isic-lesion is the paper's schedule on a GPU (scripts/paper_schedule.sh writes it to
    # $ISIC_PAPER_RUN): +0.015 Dice on the 439 over the CPU recipe below, which is what a CPU-only machine trains.
    paper="${ISIC_PAPER_RUN:-$RUNS/paper/isic-lesion-paper.safetensors}"
    if [ -f "$paper" ]; then
        ship_scored isic-lesion "$paper" "$DATA/isic" scripts/splits/isic-lesion.val.txt "dermoscopic skin lesion (RGB)" \
            lesion "isic_439=$DATA/isic:scripts/splits/isic-lesion.heldout.txt"
    else  # with the jitter: +0.012 Dice on the 439 (docs/models.md)
        EXTRA="--jitter 1" specialist isic-lesion isic lesion "dermoscopic skin lesion (RGB)" \
            "isic_439=$DATA/isic:scripts/splits/isic-lesion.heldout.txt"
    fi
fi
if [ "$which" = thyroid ] || [ "$which" = all ]; then
    grep '^test_' "$DATA/tg3k/list.txt" > "$RUNS/tg3k_test.txt"
    # from the GPU-trained busi-lesion (gray ultrasound, 256²), with the jitter (docs/models.md)
    INIT="$ULTRASOUND_INIT" EXTRA="--jitter 1 --size 256 --channels 1" specialist thyroid tg3k "thyroid gland" "thyroid gland in ultrasound" "tg3k_test=$DATA/tg3k:$RUNS/tg3k_test.txt"
fi
if [ "$which" = clicks ] || [ "$which" = all ]; then
    # the click model: the shipped generalist with zero-weight prompt channels, trained with simulated clicks on
    # the generalist's data (docs/interactive.md); about 95 min on a 2-core CPU
    out="$RUNS/generalist-clicks.safetensors"
    # shellcheck disable=SC2086
    zoo "$out" --init "$GENERALIST_INIT" --prompts clicks $CLICKS_SCHEDULE
    if [ "$SHIP" = 1 ]; then
        grep '^test_' "$DATA/tg3k/list.txt" > "$RUNS/tg3k_test.txt"
        "$PY" scripts/train_zoo.py --data "$DATA" --out "$out" --val-lists-only
        ev "$DATA/busi" --checkpoint "$out" --list "$RUNS/generalist-clicks.val.busi.txt" > "$RUNS/generalist-clicks.own_val.json"
        ev "$DATA/tg3k" --checkpoint "$out" --list "$RUNS/tg3k_test.txt" > "$RUNS/generalist-clicks.tg3k_test.json"
        ev "$DATA/cvc_colondb" --checkpoint "$out" > "$RUNS/generalist-clicks.colondb.json"
        "$PY" scripts/ship_checkpoint.py "$out" --name generalist-clicks --task "correct masks with clicks (RGB, any modality)" \
            --classes foreground --reference-llm --images sample_data/busi/images \
            --metrics "own_val=$RUNS/generalist-clicks.own_val.json" "tg3k_test=$RUNS/generalist-clicks.tg3k_test.json" \
            "colondb=$RUNS/generalist-clicks.colondb.json" --description "$(cat scripts/cards/generalist-clicks.txt)"
    fi
fi
exit 0
