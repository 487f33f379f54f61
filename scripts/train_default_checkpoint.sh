#!/usr/bin/env bash
# Reproduces the checkpoint shipped in flashvideo/default_checkpoint/ (see docs/default_checkpoint.md) on a 2-core
# CPU in about eight hours: the image tokenizer on 2 cores, then both language models at once, one core each, in two
# phases (the second continues the first on new clips with a fresh optimiser, as it was run across sessions), then
# three more phases for the interpolation model alone, then four more for the key-frame model.
#
#   scripts/train_default_checkpoint.sh [WORK_DIR]    (default: ./default-checkpoint-run; then WORK_DIR-2 … -4, -8, -12,
#                                                      -13, -14, -15, -final)
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

# Phase 2: from phase 1's weights, new Shapes clips (data seeds 2 and 3), learning rate 1e-3 with a new warm-up.
LM2="--model_name_or_path $WORK --output_dir $WORK-2 --learning_rate 1e-3 --warmup_steps 50 --weight_decay 0.01
  --save_steps 200 --logging_steps 10 --report_to tensorboard --seed 1"
# shellcheck disable=SC2086
$PYTHON -m flashvideo.training --stage keyframe --num_clips 8192 --data_seed 2 --per_device_train_batch_size 8 \
  --max_steps "${KEYFRAME_STEPS_2:-2800}" $LM2 &
# shellcheck disable=SC2086
$PYTHON -m flashvideo.training --stage interpolation --num_clips 1536 --data_seed 3 --per_device_train_batch_size 6 \
  --max_steps "${INTERPOLATION_STEPS_2:-1000}" $LM2 &
wait

# Phase 3: the interpolation model alone, on new clips, at a lower learning rate (one core, 20 minutes).
$PYTHON -m flashvideo.training --stage interpolation --model_name_or_path "$WORK-2" --output_dir "$WORK-3" \
  --num_clips 1024 --data_seed 4 --per_device_train_batch_size 6 --max_steps 400 --learning_rate 3e-4 \
  --warmup_steps 20 --weight_decay 0.01 --save_steps 100 --logging_steps 10 --report_to tensorboard --seed 2
unset OMP_NUM_THREADS
# The shipped directory: phase 2's key-frame model and processor, phase 3's interpolation model.
rm -rf "$WORK-final"
mkdir "$WORK-final"
cp -r "$WORK-2"/{config.json,generation_config.json,model.safetensors,processor_config.json,image_tokenizer,text_tokenizer} \
  "$WORK-final"/
cp -r "$WORK-3/interpolation" "$WORK-final"/

# Phase 4: the interpolation model from that directory, on 2,048 new clips, 1,500 steps (one core, 80 minutes).
OMP_NUM_THREADS=1 $PYTHON -m flashvideo.training --stage interpolation --model_name_or_path "$WORK-final" \
  --output_dir "$WORK-4" --num_clips 2048 --data_seed 5 --per_device_train_batch_size 6 --max_steps 1500 \
  --learning_rate 4e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 3
rm -rf "$WORK-final/interpolation"
cp -r "$WORK-4/interpolation" "$WORK-final"/

# Phase 8 (phases 5-7 were tried and not shipped, docs/default_checkpoint.md): the interpolation model once more, with
# slower retention decays. RetNet's γ_h = 1 − 2^(−5−h) lets a 4-head model's slowest head remember about 256 tokens,
# one frame; exponents 5 6 8 10 stretch it to about 1,000 (four frames). 2,400 steps on 2,048 new clips (2 threads,
# 55 minutes plus 5 for encoding the clips).
OMP_NUM_THREADS=2 $PYTHON -m flashvideo.training --stage interpolation --model_name_or_path "$WORK-final" \
  --decay_exponents 5 6 8 10 --output_dir "$WORK-8" --num_clips 2048 --data_seed 10 --per_device_train_batch_size 6 \
  --max_steps 2400 --learning_rate 4e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 8
rm -rf "$WORK-final/interpolation"
cp -r "$WORK-8/interpolation" "$WORK-final"/

# Phase 12 (phases 9-11 were tried and not shipped): the key-frame model, with code position embeddings switched on
# (a new table, from zero), 1,600 steps on 4,096 new clips (2 threads, 25 minutes plus 3 for encoding the clips).
OMP_NUM_THREADS=2 $PYTHON -m flashvideo.training --stage keyframe --model_name_or_path "$WORK-final" \
  --code_position_embeddings --output_dir "$WORK-12" --num_clips 4096 --data_seed 14 --per_device_train_batch_size 8 \
  --max_steps 1600 --learning_rate 3e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 12
# Phase 13: phase 12's key-frame model 1,000 more steps on 4,096 new clips at a lower learning rate (16 minutes plus 3).
OMP_NUM_THREADS=2 $PYTHON -m flashvideo.training --stage keyframe --model_name_or_path "$WORK-12" \
  --output_dir "$WORK-13" --num_clips 4096 --data_seed 15 --per_device_train_batch_size 8 --max_steps 1000 \
  --learning_rate 2e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 13
# Phases 14 and 15: 2,000 more steps each, on 16,384 new clips each (one pass, no clip seen twice), at falling learning
# rates (2 threads, 22 minutes plus 5 for encoding the clips, each). Phase 14 started from the float16 export of
# phase 13 (the checkpoint shipped then), upcast to float32 on load.
OMP_NUM_THREADS=2 $PYTHON -m flashvideo.training --stage keyframe --model_name_or_path "$WORK-13" \
  --output_dir "$WORK-14" --num_clips 16384 --data_seed 16 --per_device_train_batch_size 8 --max_steps 2000 \
  --learning_rate 2e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 14
OMP_NUM_THREADS=2 $PYTHON -m flashvideo.training --stage keyframe --model_name_or_path "$WORK-14" \
  --output_dir "$WORK-15" --num_clips 16384 --data_seed 17 --per_device_train_batch_size 8 --max_steps 2000 \
  --learning_rate 1.5e-4 --warmup_steps 30 --weight_decay 0.01 --save_steps 100 --logging_steps 10 \
  --report_to tensorboard --seed 15
cp "$WORK-15"/{config.json,generation_config.json,model.safetensors} "$WORK-final"/

$PYTHON scripts/plot_training_curves.py "$WORK" docs/default_checkpoint \
  --continued "$WORK-2" "$WORK-3" "$WORK-4" "$WORK-8" "$WORK-12" "$WORK-13" "$WORK-14" "$WORK-15"
rm -rf "$WORK-fp16"
$PYTHON scripts/export_checkpoint_fp16.py "$WORK-final" "$WORK-fp16"
flashvideo eval --model "$WORK-fp16" --num-samples 24 --seed 1000 --output-dir docs/default_checkpoint
