#!/usr/bin/env bash
# Reproduces the default model shipped in med_hf/default_model (see README, "The default model").
# Data: BSDS500 train photos and the irregular masks beside the checkout (../shared/data), the masks used by the
# evaluation protocol for the 100 validation photos excluded. Then:
#   python training/evaluate.py --val_dir ../shared/data/bsds500/val --mask_dir ../shared/data/masks/irregular \
#       --model default=runs/default --output_dir runs/default/eval --save_images 6
#   python training/export_default_model.py runs/default
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
exec python training/train.py \
  --train_data_dir "$DATA/bsds500/train" \
  --mask_dir "$DATA/masks/irregular" --mask_exclude_eval 100 \
  --mask_ratios free_form=0.25,box=0.05,folder=0.7 \
  --model_config small --resolution 256 --random_scale 1.0 1.0 \
  --train_batch_size 4 --max_train_steps 12500 \
  --learning_rate 1e-3 --adam_beta1 0.9 --lr_scheduler linear --lr_warmup_steps 300 \
  --l1_weight 1 --hole_weight 6 --valid_weight 1 --aux_weight 1 --ssim_weight 1 \
  --gan_weight 0 --perceptual_weight 0 --style_weight 0 \
  --structure_cache_dir runs/structure_cache \
  --checkpointing_steps 500 --checkpoints_total_limit 3 \
  --validation_steps 500 --validation_data_dir "$DATA/bsds500/val" --num_validation_images 4 \
  --logging_steps 50 --seed 0 \
  --output_dir runs/default --resume_from_checkpoint latest "$@"
