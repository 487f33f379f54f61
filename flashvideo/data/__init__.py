"""Data sets for FlashVideo: the procedural Shapes set, real video folders, and their tokenized forms.

Example:
    >>> from flashvideo.data import shapes_dataset, load_video_folder
    >>> ds = shapes_dataset(8, seed=0)  # doctest: +SKIP
"""

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
from .video_folders import LoadReport, load_video_folder

__all__ = [
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
