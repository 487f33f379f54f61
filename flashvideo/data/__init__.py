"""Data sets for FlashVideo: the procedural Shapes set, real video folders, their tokenized forms, data sets of VQ codes
encoded once (`load_codes`, `codes_to_samples`), held-out splits and the collator.

Example:
    >>> from flashvideo.data import shapes_dataset, load_video_folder
    >>> ds = shapes_dataset(8, seed=0)  # doctest: +SKIP
"""

from .codes import CodesInfo, codes_to_samples, load_codes
from .collate import pad_batch
from .shapes import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    make_prompt,
    parse_prompt,
    prompts_for_all_attributes,
    render_clip,
    sample_clip_params,
    shapes_dataset,
)
from .tokenized import interpolation_windows, keyframe_indices, tokenize_video_dataset
from .splits import held_out_split
from .video_folders import LoadReport, load_video_folder
from .video_frames import load_videos

__all__ = [
    "CodesInfo",
    "codes_to_samples",
    "held_out_split",
    "load_codes",
    "load_videos",
    "pad_batch",
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "LoadReport",
    "load_video_folder",
    "make_prompt",
    "parse_prompt",
    "prompts_for_all_attributes",
    "render_clip",
    "sample_clip_params",
    "shapes_dataset",
    "tokenize_video_dataset",
    "keyframe_indices",
    "interpolation_windows",
]
