#!/usr/bin/env bash
# Retrains the bundled default T2 model exactly as shipped (CPU, full resolution on crops), in three
# stages: (1) the four SMILE phases with the paper's G; (2) the segmentor fine-tuned with resolution
# augmentation (finetune_segmentor.py); (3) the gated generator (smilecore/gated.py), started from
# that S (gate = S's lesion probability, C = the smooth fill) and trained in phase 1 against it,
# S and R kept as they are (--freeze S; phase 1 does not train R), then continued once with the
# transplant terms weighted 3.
# Usage: scripts/train_default_model.sh [BRATS_DIR] [RUN_DIR]
# BRATS_DIR: the 12 BraTS 2018 cases of ../shared/data/brats. Brats18_TCIA02_370_1 (the bundled
# sample) is held out as test case, Brats18_CBICA_ABM_1 is the validation case, the other 10 train.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/brats}
run=${2:-runs/default}
split=(--test-cases Brats18_TCIA02_370_1 --val-cases Brats18_CBICA_ABM_1 --split 1,0,0)
smile train "$data" --out "$run" "${split[@]}" \
  --epochs 5,1,2,1 --steps-per-epoch 150 --base 16 --depth 4 --crop 128 --batch-size 8 \
  --norm batch --lr 1e-3 --transplant-weight 1 --save-half --seed 0
python scripts/finetune_segmentor.py "$run/smile-model.pt" "$data" --out "$run/smile-model-finetuned.pt" \
  --steps 300 --batch-size 8 --crop 128 --lr 1e-4 --seed 0 --cache-dir "$run/cache"
smile train "$data" --out "$run/gated" "${split[@]}" --cache-dir "$run/cache" \
  --init-from "$run/smile-model-finetuned.pt" --generator gated --freeze S --variant gvs \
  --epochs 1 --steps-per-epoch 1000 --crop 128 --batch-size 8 --lr 5e-4 --gate-grow 2 --gate-floor 0.8 \
  --transplant-weight 1 --transplant-lesion-weight 1 --save-half --seed 0
# stage 3 continued once (a fresh optimiser and data order) with the transplant terms weighted 3,
# so the gate learns pasted lesions where S never saw one (top and bottom slices)
smile train "$data" --out "$run/gated-1" "${split[@]}" --cache-dir "$run/cache" \
  --init-from "$run/gated/smile-model.pt" --generator gated --freeze S --variant gvs \
  --epochs 1 --steps-per-epoch 1000 --crop 128 --batch-size 8 --lr 3e-4 \
  --lr-schedule cosine --transplant-weight 3 --transplant-lesion-weight 1 --save-half --seed 1
cp "$run/gated-1/smile-model.pt" smilecore/resources/smile-default-t2.pt
