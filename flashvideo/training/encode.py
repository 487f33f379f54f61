"""
Encode once: videos → VQ codes, written as a 🤗 data set of Parquet shards (`flashvideo.data.codes`) that every
later key-frame or interpolation run reads with `--codes_dataset`, instead of running the image tokenizer over
the whole corpus again.

```bash
python -m flashvideo.training.encode --processor_name_or_path ckpt --video_folder videos/ --output_dir codes
# the same, sharded over 2 processes (each decodes and encodes its own shards); on GPUs drop ACCELERATE_USE_CPU
ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m flashvideo.training.encode \\
    --processor_name_or_path ckpt --video_folder videos/ --num_shards 8 --output_dir codes
python -m flashvideo.training --stage keyframe --codes_dataset codes --output_dir ckpt ...
python -m flashvideo.training --stage keyframe --codes_dataset codes --streaming --output_dir ckpt ...
```

The sources are those of training (a `--video_folder`, a `--dataset_name`, or Shapes), read the same way
(`--num_frames`, `--frame_stride`, the processor's frame size). Shard `s` of `--num_shards` holds the videos
`s, s + num_shards, ...` and is written by process `s % num_processes`; only that process decodes them, one
shard in memory at a time, so more shards means less memory per process. Every frame of every clip is encoded,
so one codes data set serves both sample kinds (key frames, interpolation) and any number of key frames.

A `--dataset_name` too large for one disk is read with `--streaming`: every process streams its own part
(`split_dataset_by_node`) and writes a shard every `--rows_per_shard` clips, so neither the videos nor more than one
shard of them are ever stored; only the codes are (one int32 per 4x4 pixels or more: 1/12 of the RGB bytes at most).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.distributed import split_dataset_by_node
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from tqdm.auto import tqdm
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from ..data.codes import (
    CODES_INFO_NAME,
    DATA_FOLDER,
    CodesInfo,
    codes_features,
    count_rows,
    encode_clips,
    shard_file_name,
    shard_paths,
    write_codes_shard,
)
from ..data.video_folders import FOLDER_FORMATS, resize_and_center_crop
from ..data.video_frames import video_frames
from ..image_tokenizer import image_tokenizer_fingerprint
from ..validation import check_int
from .arguments import DataArguments
from .errors import TrainingSetupError, run_command
from .sharding import ShardingError, check_process_count

logger = hf_logging.get_logger(__name__)


@dataclass
class EncodeArguments:
    """What to encode, with which image tokenizer, into how many shards."""

    processor_name_or_path: str = field(
        metadata={"help": "The processor whose image tokenizer encodes the frames ('default': the shipped one)."}
    )
    output_dir: str = field(metadata={"help": "The codes data set folder to write."})
    num_shards: int | None = field(
        default=None,
        metadata={"help": "Parquet shards to write (default: one per process). More shards: less memory each."},
    )
    encode_batch_size: int = field(default=64, metadata={"help": "Frames per image-tokenizer call."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a codes data set already in --output_dir."}
    )
    # The video source, as for training (see `python -m flashvideo.training --help`).
    video_folder: str | None = field(default=None, metadata={"help": "A local folder of videos or frame folders."})
    video_folder_layout: str = field(
        default="auto", metadata={"help": f"--video_folder layout: one of {', '.join(FOLDER_FORMATS)}."}
    )
    video_folder_text: str | None = field(
        default=None, metadata={"help": "--video_folder, 'frames' layout: caption of folders that have none."}
    )
    caption_template: str = field(
        default="{label}", metadata={"help": "--video_folder, 'ucf101' layout: caption template with {label}."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A 🤗 data set of videos (Hub id or path)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "--dataset_name: configuration."})
    dataset_split: str = field(default="train", metadata={"help": "--dataset_name: split."})
    video_column: str = field(default="video", metadata={"help": "--dataset_name: column of the videos."})
    text_column: str = field(default="text", metadata={"help": "--dataset_name: column of the captions."})
    num_clips: int = field(default=1024, metadata={"help": "Shapes (no other source given): number of clips."})
    data_seed: int = field(default=0, metadata={"help": "Shapes: the seed that draws the clips."})
    num_frames: int = field(default=16, metadata={"help": "Frames per clip (at least 3)."})
    frame_stride: int = field(default=1, metadata={"help": "Take every N-th frame."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Encode only the first N videos."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "--dataset_name: stream the videos (a 🤗 IterableDataset; each process reads its own part, "
            "split_dataset_by_node) instead of downloading the data set, and write a shard every "
            "--rows_per_shard clips as they come; --num_shards does not apply."
        },
    )
    rows_per_shard: int = field(default=1024, metadata={"help": "--streaming: clips per Parquet shard."})

    def __post_init__(self) -> None:
        check_int("--num_shards", self.num_shards, 1, optional=True)
        check_int("--encode_batch_size", self.encode_batch_size, 1)
        check_int("--num_frames", self.num_frames, 3)
        check_int("--rows_per_shard", self.rows_per_shard, 1)
        if self.streaming and self.dataset_name is None:
            raise ValueError("--streaming streams a --dataset_name (a Hub or local 🤗 data set of videos).")
        if self.streaming and self.num_shards is not None:
            raise ValueError("--num_shards does not apply with --streaming (see --rows_per_shard).")
        self.data_arguments()  # the source arguments are checked as training checks them

    def data_arguments(self) -> DataArguments:
        """The training `DataArguments` that read the same videos."""
        names = (
            "video_folder", "video_folder_layout", "video_folder_text", "caption_template", "dataset_name",
            "dataset_config_name", "dataset_split", "video_column", "text_column", "num_clips", "data_seed",
            "num_frames", "frame_stride", "max_train_samples",
        )  # fmt: skip
        # The sample-cutting arguments play no part in encoding; values every clip length >= 3 admits.
        return DataArguments(**{name: getattr(self, name) for name in names}, num_key_frames=1, interpolation_frames=1)


def encode(args: EncodeArguments) -> CodesInfo:
    """
    Encode the videos `args` names into a codes data set in `args.output_dir`, sharded over the processes of
    the current launch (`accelerate launch`, or one process). Returns what `flashvideo_codes.json` records.

    Example:
        >>> info = encode(EncodeArguments(processor_name_or_path="ckpt", output_dir="codes", video_folder="videos"))  # doctest: +SKIP
        >>> info.num_rows  # doctest: +SKIP
        128
    """
    from .stages import load_processor, load_vq, resolve_model_source, training_videos

    # ACCELERATE_USE_CPU=true (the launcher's CPU processes, gloo) as `Accelerator()` reads it.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    try:
        check_process_count(state)
    except ShardingError as error:
        raise TrainingSetupError(str(error)) from None
    output_dir = Path(args.output_dir)
    num_shards = args.num_shards or state.num_processes
    source = resolve_model_source(args.processor_name_or_path, "--processor_name_or_path")
    layout = load_processor(source, "--processor_name_or_path").layout
    vq = load_vq(source, "--processor_name_or_path")
    data_args = args.data_arguments()

    if state.is_main_process:
        existing = (output_dir / CODES_INFO_NAME).exists() or (output_dir / DATA_FOLDER).exists()
        if existing and not args.overwrite_output_dir:
            raise TrainingSetupError(
                f"--output_dir {output_dir} already holds a codes data set; pass --overwrite_output_dir to replace "
                "it, or another --output_dir."
            )
        (output_dir / CODES_INFO_NAME).unlink(missing_ok=True)
        shutil.rmtree(output_dir / DATA_FOLDER, ignore_errors=True)
        (output_dir / DATA_FOLDER).mkdir(parents=True)
    state.wait_for_everyone()

    features = codes_features(args.num_frames, layout.code_grid_size)
    vq.to(state.device).eval()
    mine = [] if args.streaming else list(range(state.process_index, num_shards, state.num_processes))
    if args.streaming:
        num_shards = _encode_stream(args, vq, layout, state, output_dir / DATA_FOLDER, features)
    else:
        logger.info(
            f"Process {state.process_index} of {state.num_processes}: shard(s) {mine} of {num_shards} into "
            f"{output_dir / DATA_FOLDER}"
        )
    for shard in mine:
        videos = training_videos(data_args, layout.image_size, shard=(shard, num_shards), cache=False)
        codes = np.empty((len(videos), args.num_frames, layout.code_grid_size, layout.code_grid_size), np.int32)
        per_step = max(1, args.encode_batch_size // args.num_frames)  # clips per image-tokenizer call
        for start in tqdm(
            range(0, len(videos), per_step),
            desc=f"Encoding shard {shard + 1}/{num_shards}",
            unit="batch",
            disable=not state.is_local_main_process,
        ):
            clips = np.asarray(videos[start : start + per_step]["video"], dtype=np.uint8)
            codes[start : start + len(clips)] = encode_clips(vq, clips, args.encode_batch_size)
        rows = write_codes_shard(
            codes, list(videos["text"]), output_dir / DATA_FOLDER / shard_file_name(shard, num_shards), features
        )
        logger.info(f"Shard {shard}: {rows} clip(s)")
    state.wait_for_everyone()

    info = CodesInfo(
        num_frames=args.num_frames,
        image_size=layout.image_size,
        code_grid_size=layout.code_grid_size,
        image_vocab_size=layout.image_vocab_size,
        image_tokenizer_fingerprint=image_tokenizer_fingerprint(vq),
        num_shards=num_shards,
        num_rows=sum(count_rows(output_dir).values()),
        source=_describe_source(args),
        processor=str(source),
    )
    if state.is_main_process:
        info.save(output_dir)
        logger.info(f"{info.num_rows} clip(s) encoded into {num_shards} shard(s) in {output_dir}")
    state.wait_for_everyone()
    return info


def _encode_stream(
    args: EncodeArguments, vq: Any, layout: Any, state: PartialState, folder: Path, features: datasets.Features
) -> int:
    """
    `--streaming`: this process's part of the streamed `--dataset_name`, encoded and written every
    `--rows_per_shard` clips; then the main process names all shards `train-i-of-N` (process by process, in order).
    Returns N.
    """
    stream = datasets.load_dataset(
        args.dataset_name, args.dataset_config_name, split=args.dataset_split, streaming=True
    )
    for argument, column in (("video_column", args.video_column), ("text_column", args.text_column)):
        if stream.column_names is not None and column not in stream.column_names:
            raise TrainingSetupError(
                f"--{argument} {column!r} is not a column of {args.dataset_name} (columns: {stream.column_names})."
            )
    if args.max_train_samples is not None:
        stream = stream.take(args.max_train_samples)
    if state.num_processes > 1:
        stream = split_dataset_by_node(stream, rank=state.process_index, world_size=state.num_processes)
    logger.info(
        f"Process {state.process_index} of {state.num_processes}: streaming its part of {args.dataset_name} into "
        f"{folder}, {args.rows_per_shard} clips per shard"
    )
    clips: list[np.ndarray] = []
    texts: list[str] = []
    written = skipped = 0

    def flush() -> None:
        nonlocal written
        path = folder / f".stream-{state.process_index:05d}-{written:05d}.parquet"
        write_codes_shard(encode_clips(vq, np.stack(clips), args.encode_batch_size), texts, path, features)
        written += 1
        clips.clear()
        texts.clear()

    for row in tqdm(stream, desc="Encoding (streamed)", unit="clip", disable=not state.is_local_main_process):
        frames = video_frames(row[args.video_column], args.num_frames, args.frame_stride)
        if frames is None:
            skipped += 1
            continue
        clips.append(resize_and_center_crop(frames, layout.image_size))
        texts.append(str(row[args.text_column]))
        if len(clips) == args.rows_per_shard:
            flush()
    if clips:
        flush()
    if skipped:
        logger.warning(f"{skipped} video(s) have fewer than {args.num_frames} frames (stride {args.frame_stride}): skipped")
    state.wait_for_everyone()
    if state.is_main_process:
        parts = sorted(folder.glob(".stream-*.parquet"))
        for index, part in enumerate(parts):
            os.replace(part, folder / shard_file_name(index, len(parts)))
    state.wait_for_everyone()
    return len(shard_paths(folder.parent))


def _describe_source(args: EncodeArguments) -> str:
    if args.video_folder is not None:
        return f"video_folder {args.video_folder} ({args.video_folder_layout})"
    if args.dataset_name is not None:
        return f"dataset {args.dataset_name} ({args.dataset_split})"
    return f"Shapes ({args.num_clips} clips, data_seed {args.data_seed})"


def main(argv: list[str] | None = None) -> int:
    """`python -m flashvideo.training.encode` (also under `accelerate launch`): 0 on success, 2 on bad arguments,
    1 on a setup problem."""
    parser = HfArgumentParser(EncodeArguments, allow_abbrev=False)
    parser.prog = "python -m flashvideo.training.encode"
    parser.description = "Encode videos once into a 🤗 data set of VQ codes (Parquet shards) for --codes_dataset."
    return run_command(
        parser.prog,
        lambda: parser.parse_args_into_dataclasses(args=argv)[0],
        encode,
        setup_errors=(TrainingSetupError, ValueError, FileNotFoundError),
    )


__all__ = ["EncodeArguments", "encode", "main"]

if __name__ == "__main__":
    sys.exit(main())
