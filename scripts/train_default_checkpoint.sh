#!/usr/bin/env bash
# Reproduces the checkpoint shipped in flashvideo/default_checkpoint/ (see docs/default_checkpoint.md), on a
# 2-core CPU in about two hours: the image tokenizer on 2 cores, then both language models at once, one core each.
#
#   scripts/train_default_checkpoint.sh [WORK_DIR]    (default: ./default-checkpoint-run)
#
# Then: the training curves, the float16 copy, the evaluation.
set -euo pipefail
WORK=${1:-default-checkpoint-run}
PYTHON=${PYTHON:-python}

$PYTHON -m flashvideo.training --stage tokenizer --output_dir "$WORK" --num_clips 512 \
  --per_device_train_batch_size 32 --learning_rate 2e-3 --warmup_steps 20 --max_steps 600 --save_steps 100 \
  --logging_steps 10 --report_to tensorboard --seed 0 --vq_norm_num_groups 1

LM="--output_dir $WORK --data_seed 1 --hidden_size 128 --num_hidden_layers 4 --num_attention_heads 4
  --intermediate_size 256 --learning_rate 1.5e-3 --warmup_steps 50 --weight_decay 0.01 --save_steps 200
  --logging_steps 10 --report_to tensorboard --seed 0"
export OMP_NUM_THREADS=1
# shellcheck disable=SC2086
$PYTHON -m flashvideo.training --stage keyframe --num_clips 4096 --per_device_train_batch_size 8 \
  --max_steps "${KEYFRAME_STEPS:-1800}" $LM &
# shellcheck disable=SC2086
$PYTHON -m flashvideo.training --stage interpolation --num_clips 1536 --per_device_train_batch_size 6 \
  --max_steps "${INTERPOLATION_STEPS:-1100}" $LM &
wait
unset OMP_NUM_THREADS

$PYTHON scripts/plot_training_curves.py "$WORK" docs/default_checkpoint
rm -rf "$WORK-fp16"
$PYTHON scripts/export_checkpoint_fp16.py "$WORK" "$WORK-fp16"
flashvideo eval --model "$WORK-fp16" --num-samples 24 --seed 1000 --output-dir docs/default_checkpoint
