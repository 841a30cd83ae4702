#!/usr/bin/env bash
# Reproduces the default model shipped in med_hf/default_model (see README, "The default model").
# Data: BSDS500 train photos and the irregular masks beside the checkout (../shared/data), the masks used by the
# evaluation protocol for the 100 validation photos excluded.
# Seven stages, each resumable (re-run the script after an interruption; finished stages are skipped):
#   1. runs/default      12500 steps from scratch, L1 (holes x6) + auxiliary + a little SSIM, lr 1e-3 -> 0
#   2. runs/default-ft    3500 steps from stage 1 with a stronger SSIM term (x6), lr 3e-4 -> 0
#   3. runs/default-ft2   3000 steps from stage 2 with SSIM x12, lr 3e-4 -> 0
#   4. runs/default-ft3   3000 steps from stage 3 with a 16-channel full-resolution refinement head added, L1 and
#                         SSIM weighted per sample by 1 / hole area
#   5. runs/default-ft4   2000 steps from stage 4, same losses, lr 2e-4 -> 0
#   6. runs/default-ft5   2000 steps from stage 5 with the harmonic hole prior added to the refinement head
#   7. runs/default-ft6   2500 steps from stage 6, same losses, lr 2e-4 -> 0
# Then evaluate and package the last stage:
#   python training/evaluate.py --val_dir ../shared/data/bsds500/val --mask_dir ../shared/data/masks/irregular \
#       --model default=runs/default-ft6 --output_dir runs/default-ft6/eval --save_images 6
#   python training/export_default_model.py runs/default-ft6 --eval_dir runs/default-ft6/eval
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}

# stage OUTPUT_DIR [train.py arguments that differ from stage 1]
stage() {
  local output_dir=$1
  shift
  if [[ -f "$output_dir/model.safetensors" ]]; then
    echo "$output_dir is finished, skipping"
    return
  fi
  python training/train.py \
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
    --output_dir "$output_dir" --resume_from_checkpoint latest "$@"
}

stage runs/default
stage runs/default-ft --init_from runs/default \
  --max_train_steps 3500 --learning_rate 3e-4 --lr_warmup_steps 100 --ssim_weight 6
stage runs/default-ft2 --init_from runs/default-ft \
  --max_train_steps 3000 --learning_rate 3e-4 --lr_warmup_steps 100 --ssim_weight 12
stage runs/default-ft3 --init_from runs/default-ft2 \
  --max_train_steps 3000 --learning_rate 3e-4 --lr_warmup_steps 100 --ssim_weight 12 \
  --refinement_channels 16 --weight_by_hole_area
stage runs/default-ft4 --init_from runs/default-ft3 \
  --max_train_steps 2000 --learning_rate 2e-4 --lr_warmup_steps 50 --ssim_weight 12 --weight_by_hole_area
stage runs/default-ft5 --init_from runs/default-ft4 \
  --max_train_steps 2000 --learning_rate 2e-4 --lr_warmup_steps 50 --ssim_weight 12 --weight_by_hole_area \
  --hole_prior harmonic
stage runs/default-ft6 --init_from runs/default-ft5 \
  --max_train_steps 2500 --learning_rate 2e-4 --lr_warmup_steps 50 --ssim_weight 12 --weight_by_hole_area
