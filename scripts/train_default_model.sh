#!/usr/bin/env bash
# Retrains the bundled default T2 model exactly as shipped (CPU, full resolution on crops): the
# four SMILE phases, then the segmentor fine-tuned with resolution augmentation (finetune_segmentor.py).
# Usage: scripts/train_default_model.sh [BRATS_DIR] [RUN_DIR]
# BRATS_DIR: the 12 BraTS 2018 cases of ../shared/data/brats. Brats18_TCIA02_370_1 (the bundled
# sample) is held out as test case, Brats18_CBICA_ABM_1 is the validation case, the other 10 train.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/brats}
run=${2:-runs/default}
smile train "$data" --out "$run" \
  --test-cases Brats18_TCIA02_370_1 --val-cases Brats18_CBICA_ABM_1 --split 1,0,0 \
  --epochs 5,1,2,1 --steps-per-epoch 150 --base 16 --depth 4 --crop 128 --batch-size 8 \
  --norm batch --lr 1e-3 --transplant-weight 1 --save-half --seed 0
python scripts/finetune_segmentor.py "$run/smile-model.pt" "$data" --out "$run/smile-model-finetuned.pt" \
  --steps 300 --batch-size 8 --crop 128 --lr 1e-4 --seed 0 --cache-dir "$run/cache"
cp "$run/smile-model-finetuned.pt" smilecore/resources/smile-default-t2.pt
