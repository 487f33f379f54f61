"""Image tokenizers compared on the background codes of the same Shapes clips: issue 21's lever 4 (one code for the
black background, docs/default_checkpoint.md) measured for a tokenizer before any language model is trained on it.

    OMP_NUM_THREADS=2 python scripts/compare_image_tokenizers.py --seed 26500 --num-samples 96 \
        shipped "no mid-block attention=runs/phase23vq"

Each tokenizer is `shipped` (the default checkpoint's) or `NAME=PATH` (a checkpoint directory with `image_tokenizer/`,
as `--stage tokenizer` writes). For each, on the true key frames of the clips: the reconstruction PSNR; how many
distinct codes the plain black background gets and the commonest one's share (`direction_by_stage.background_codes`);
the share of cells whose code changes across a clip's key frames against the share whose pixels do; and what giving
every background cell the commonest background code (of Shapes clips of `--background-seed`) does to the key frames
themselves (`compare_interpolation_models.key_frames_with_one_code`). One JSON line per tokenizer.
"""

import json
import sys
from pathlib import Path

import numpy as np

from flashvideo import default_checkpoint
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.image_tokenizer import frames_to_codes, load_image_tokenizer
from flashvideo.pipeline_flashvideo import FlashVideoPipeline


sys.path.insert(0, str(Path(__file__).resolve().parent))
from changing_cell_loss import changing_pixel_cell_share  # noqa: E402
from compare_interpolation_models import (  # noqa: E402
    commonest_background_code,
    key_frames_with_one_code,
    model_comparison_parser,
    with_one_background_code,
)
from direction_by_stage import KEY_FRAME_SPACING, background_codes  # noqa: E402


def main() -> None:
    parser = model_comparison_parser(__doc__, "evaluation set seed")
    parser.add_argument("--background-seed", type=int, default=1, help="Shapes clips the commonest code is found on")
    parser.add_argument("--output", type=Path, help="a .jsonl file (default: print only)")
    args = parser.parse_args()

    pipe = FlashVideoPipeline.from_pretrained(default_checkpoint(), show_progress=False)
    videos, _, _ = evaluation_set(args.num_samples, args.seed)
    key_frames = np.ascontiguousarray(videos[:, ::KEY_FRAME_SPACING])
    lines = []
    for spec in args.models:
        name, _, path = ("shipped", "", default_checkpoint()) if spec == "shipped" else spec.partition("=")
        pipe.vqvae = load_image_tokenizer(path)
        codes = frames_to_codes(pipe.vqvae, key_frames, batch_size=args.batch_size * 8)
        code = commonest_background_code(pipe, args.background_seed)
        one_code = with_one_background_code(pipe, codes, code)
        line = {
            "tokenizer": name,
            "spec": spec,
            "seed": args.seed,
            "background": background_codes(key_frames, codes.numpy()),
            "changing_code_cells": float((codes != codes[:, :1]).any(dim=1).float().mean()),
            "changing_pixel_cells": changing_pixel_cell_share(key_frames, codes.shape[-1]),
            **key_frames_with_one_code(pipe, key_frames, codes, one_code, code),
        }
        lines.append(line)
        print(json.dumps(line), flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
