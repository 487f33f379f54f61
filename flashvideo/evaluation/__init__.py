"""Evaluation: video metrics, the Shapes analyzer, `flashvideo eval`, and the speed benchmarks.

Submodules are imported on use (`from flashvideo.evaluation.metrics import psnr, ssim`), so that importing one
metric does not load the benchmarks' baselines.
"""
