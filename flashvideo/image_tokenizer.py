"""The built-in image tokenizer: a small `diffusers.VQModel` that turns frames into grids of codebook indices.

A frame of `image_size × image_size` RGB pixels becomes a `code_grid_size × code_grid_size` grid of integers
in `[0, codebook_size)`; the language model sees those integers (offset into its vocabulary by the processor)
and `decode_codes` turns generated grids back into pixels.

Training note (DESIGN §2): `VQModel(...)(x).commit_loss` comes from diffusers' `VectorQuantizer` with its
default `legacy=True`, which swaps the two VQ-VAE terms: it returns `‖sg[z_q] − z‖² + β·‖z_q − sg[z]‖²` with
`β = 0.25`, i.e. the *commitment* term has weight 1 and the *codebook* term weight β — the reverse of van den
Oord et al. A trainer that wants the paper's weighting (codebook 1, commitment β) either sets
`vq.quantize.legacy = False` before training or computes the two terms itself from `vq.encode(x).latents`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import VQModel

from .checkpoint_files import check_local_or_repo_id, inside_checkpoint, load_component, read_json


FrameArray = np.ndarray | torch.Tensor
# Where a checkpoint keeps its image tokenizer (the pipeline's `vqvae`), beside the key-frame model.
IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"


def build_vq_model(
    image_size: int = 64,
    code_grid_size: int = 16,
    codebook_size: int = 512,
    *,
    block_out_channels: Sequence[int] | None = None,
    vq_embed_dim: int = 32,
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
    mid_block_attention: bool = True,
) -> VQModel:
    """
    Build an untrained `diffusers.VQModel` that maps `image_size²` RGB frames to `code_grid_size²` code grids.

    Every down block of the diffusers encoder but the last halves the resolution, so the number of blocks is
    `log2(image_size / code_grid_size) + 1`. The default channels `(32, 64, 64)` with one ResNet layer per
    block, a mid-block attention layer and 32-dimensional codes give about 1.0M parameters for 64×64 → 16×16.

    Args:
        image_size: frame side in pixels.
        code_grid_size: side of the code grid; `image_size / code_grid_size` must be a power of two.
        codebook_size: number of codebook vectors (`num_vq_embeddings`).
        block_out_channels: channels of each encoder/decoder block; by default 32 for the first block and 64
            for the others. Its length must be `log2(image_size / code_grid_size) + 1`.
        vq_embed_dim: dimension of the codebook vectors (also used as the latent channel count).
        layers_per_block: ResNet layers per block.
        norm_num_groups: GroupNorm groups; must divide every entry of `block_out_channels`.
        mid_block_attention: whether the encoder's and decoder's middle blocks have a self-attention layer.
            Without it a code depends only on the pixels near its cell (and the GroupNorm statistics), so that
            the same background gets the same codes wherever it is.

    Example:

    ```python
    >>> from flashvideo.image_tokenizer import build_vq_model
    >>> vq = build_vq_model(image_size=64, code_grid_size=16, codebook_size=512)
    >>> vq.config.num_vq_embeddings
    512
    ```
    """
    for name, value in (
        ("image_size", image_size),
        ("code_grid_size", code_grid_size),
        ("codebook_size", codebook_size),
        ("vq_embed_dim", vq_embed_dim),
        ("layers_per_block", layers_per_block),
        ("norm_num_groups", norm_num_groups),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    ratio = image_size // code_grid_size
    if image_size % code_grid_size or ratio & (ratio - 1):
        raise ValueError(
            "image_size / code_grid_size must be a power of two (1, 2, 4, ...), got "
            f"image_size={image_size}, code_grid_size={code_grid_size}."
        )
    num_blocks = int(math.log2(ratio)) + 1
    if block_out_channels is None:
        block_out_channels = (32,) + (64,) * (num_blocks - 1) if num_blocks > 1 else (64,)
    block_out_channels = tuple(int(c) for c in block_out_channels)
    if len(block_out_channels) != num_blocks:
        raise ValueError(
            f"block_out_channels must have log2(image_size / code_grid_size) + 1 = {num_blocks} entries for "
            f"{image_size}² → {code_grid_size}², got {len(block_out_channels)}: {block_out_channels}."
        )
    if any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(
            f"norm_num_groups ({norm_num_groups}) must divide every entry of block_out_channels "
            f"{block_out_channels}."
        )
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=vq_embed_dim,
        sample_size=image_size,
        num_vq_embeddings=codebook_size,
        norm_num_groups=norm_num_groups,
        vq_embed_dim=vq_embed_dim,
        mid_block_add_attention=mid_block_attention,
    )


def vq_downsampling_factor(vq: VQModel) -> int:
    """Pixels per code along each side: every encoder block but the last halves the resolution."""
    return 2 ** (len(vq.config.block_out_channels) - 1)


def frames_to_model_input(frames: FrameArray) -> torch.Tensor:
    """
    Convert frames to the VQ model's input: float `[N, 3, H, W]` in `[-1, 1]`.

    `frames` is either uint8 `[N, H, W, 3]` (numpy or torch; pixels as stored in videos) or a floating-point
    torch tensor `[N, 3, H, W]` already in `[-1, 1]`. The dtype decides which convention applies.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise ValueError(
                f"frames given as a numpy array must be uint8 [N, H, W, 3], got dtype {frames.dtype}; pass "
                "floats as a torch tensor [N, 3, H, W] in [-1, 1]."
            )
        # torch cannot wrap read-only arrays (e.g. from 🤗 Datasets); those are copied.
        frames = torch.from_numpy(np.require(frames, requirements=["C", "W"]))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or a torch tensor, got {type(frames).__name__}.")
    if frames.dtype == torch.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"uint8 frames must have shape [N, H, W, 3], got {tuple(frames.shape)}.")
        return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if not frames.is_floating_point():
        raise ValueError(
            f"frames must be uint8 [N, H, W, 3] or floating point [N, 3, H, W], got {frames.dtype}."
        )
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"floating-point frames must have shape [N, 3, H, W], got {tuple(frames.shape)}.")
    if frames.numel():
        # A small tolerance admits rounding; anything larger is almost surely [0, 255] pixels given as floats.
        low, high = frames.min().item(), frames.max().item()
        if low < -1.001 or high > 1.001:
            raise ValueError(
                f"floating-point frames must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]."
            )
    return frames


def encode_frames(vq: VQModel, frames: FrameArray) -> torch.LongTensor:
    """
    Encode frames into codebook indices.

    Args:
        vq: the image tokenizer.
        frames: uint8 `[N, H, W, 3]` or float `[N, 3, H, W]` in `[-1, 1]`.

    Returns:
        LongTensor `[N, h, w]` of indices in `[0, vq.config.num_vq_embeddings)`, on the model's device, where
        `h = H / 2^(blocks − 1)`.

    Example:

    ```python
    >>> import numpy as np
    >>> from flashvideo.image_tokenizer import build_vq_model, encode_frames
    >>> vq = build_vq_model()
    >>> encode_frames(vq, np.zeros((2, 64, 64, 3), dtype=np.uint8)).shape
    torch.Size([2, 16, 16])
    ```
    """
    x = frames_to_model_input(frames).to(device=vq.device, dtype=vq.dtype)
    with torch.no_grad():
        latents = vq.encode(x).latents
        # VectorQuantizer returns (z_q, loss, (perplexity, min_encodings, indices)); with
        # sane_index_shape=False the indices come flattened over batch, height and width.
        _, _, (_, _, indices) = vq.quantize(latents)
    return indices.reshape(latents.shape[0], latents.shape[2], latents.shape[3]).long()


def codes_to_latents(vq: VQModel, codes: torch.Tensor) -> torch.Tensor:
    """Look up the codebook vectors of `codes` `[N, h, w]`: quantized latents `[N, vq_embed_dim, h, w]`."""
    codes = _check_codes(vq, codes)
    n, h, w = codes.shape
    embed_dim = vq.quantize.vq_embed_dim
    return vq.quantize.get_codebook_entry(codes.reshape(-1), (n, h, w, embed_dim))


def decode_codes(vq: VQModel, codes: torch.Tensor) -> np.ndarray:
    """
    Decode code grids back to pixels.

    Args:
        vq: the image tokenizer.
        codes: integer `[N, h, w]` (torch or numpy) of indices in `[0, vq.config.num_vq_embeddings)`.

    Returns:
        uint8 numpy array `[N, H, W, 3]`.

    Example:

    ```python
    >>> import torch
    >>> from flashvideo.image_tokenizer import build_vq_model, decode_codes
    >>> vq = build_vq_model()
    >>> decode_codes(vq, torch.zeros(2, 16, 16, dtype=torch.long)).shape
    (2, 64, 64, 3)
    ```
    """
    codes = _check_codes(vq, codes)
    n, h, w = codes.shape
    with torch.no_grad():
        if vq.config.lookup_from_codebook:
            # This variant of VQModel.decode does the codebook lookup itself from the indices.
            shape = (n, h, w, vq.quantize.vq_embed_dim)
            sample = vq.decode(codes.reshape(-1), force_not_quantize=True, shape=shape).sample
        else:
            sample = vq.decode(codes_to_latents(vq, codes), force_not_quantize=True).sample
    pixels = sample.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def frames_to_codes(
    image_tokenizer: Any, frames: FrameArray, batch_size: int | None = None, image_size: int | None = None
) -> torch.LongTensor:
    """
    Encode frames with any leading dimensions into code grids (codebook indices, not yet offset into a model
    vocabulary): the one entry point from pixels to codes for the pipeline, the data sets and the evaluation.

    Args:
        image_tokenizer: a `diffusers.VQModel`, or an object with `encode_frames(frames, batch_size=...)` of its own
            (the icetk adapter).
        frames: uint8 `[..., H, W, 3]` (numpy or torch) or float torch `[..., 3, H, W]` in `[-1, 1]`.
        batch_size: frames per call of the image tokenizer (all at once when `None`).
        image_size: when given, frames must be `image_size × image_size`.

    Returns:
        LongTensor `[..., h, w]` on the image tokenizer's device.

    Example:

    ```python
    >>> import numpy as np
    >>> from flashvideo.image_tokenizer import build_vq_model, frames_to_codes
    >>> frames_to_codes(build_vq_model(), np.zeros((2, 3, 64, 64, 3), dtype=np.uint8), batch_size=4).shape
    torch.Size([2, 3, 16, 16])
    ```
    """
    if not isinstance(image_tokenizer, VQModel):
        return image_tokenizer.encode_frames(frames, batch_size=batch_size)
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise ValueError(
                f"frames given as a numpy array must be uint8 [..., H, W, 3], got dtype {frames.dtype}."
            )
        # torch cannot wrap read-only arrays (e.g. from 🤗 Datasets); those are copied.
        frames = torch.from_numpy(np.require(frames, requirements=["C", "W"]))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or a torch tensor, got {type(frames).__name__}.")
    channels_last = frames.dtype == torch.uint8
    side = image_size if image_size is not None else frames.shape[-2 if channels_last else -1]
    expected = (side, side, 3) if channels_last else (3, side, side)
    if frames.ndim < 3 or tuple(frames.shape[-3:]) != expected:
        layout = "uint8 [..., H, W, 3]" if channels_last else "float [..., 3, H, W]"
        size = f"H = W = image_size = {image_size}" if image_size is not None else "H = W"
        raise ValueError(f"frames must be {layout} with {size}, got shape {tuple(frames.shape)}.")
    leading = tuple(frames.shape[:-3])
    flat = frames.reshape(-1, *expected)
    chunks = [encode_frames(image_tokenizer, chunk) for chunk in flat.split(_chunk_size(batch_size, flat))]
    if not chunks:
        grid = side // vq_downsampling_factor(image_tokenizer)
        return torch.empty((*leading, grid, grid), dtype=torch.long)
    codes = torch.cat(chunks)
    return codes.reshape(*leading, *codes.shape[-2:])


def codes_to_frames(
    image_tokenizer: Any, codes: torch.Tensor | np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """
    Decode code grids `[..., h, w]` (codebook indices) to uint8 frames `[..., H, W, 3]`: the one way back from codes
    to pixels. `image_tokenizer` is a `diffusers.VQModel` or has `decode_frames(codes, batch_size=...)` (icetk).

    Example:

    ```python
    >>> import torch
    >>> from flashvideo.image_tokenizer import build_vq_model, codes_to_frames
    >>> codes_to_frames(build_vq_model(), torch.zeros(2, 3, 16, 16, dtype=torch.long)).shape
    (2, 3, 64, 64, 3)
    ```
    """
    if not isinstance(image_tokenizer, VQModel):
        return image_tokenizer.decode_frames(codes, batch_size=batch_size)
    codes = torch.as_tensor(codes)
    if codes.ndim < 2:
        raise ValueError(f"codes must have shape [..., h, w], got {tuple(codes.shape)}.")
    leading, grid = tuple(codes.shape[:-2]), tuple(codes.shape[-2:])
    flat = codes.reshape(-1, *grid)
    chunks = [decode_codes(image_tokenizer, chunk) for chunk in flat.split(_chunk_size(batch_size, flat))]
    if not chunks:
        side = grid[0] * vq_downsampling_factor(image_tokenizer)
        return np.empty((*leading, side, side, 3), dtype=np.uint8)
    frames = np.concatenate(chunks)
    return frames.reshape(*leading, *frames.shape[-3:])


def check_image_tokenizer(image_tokenizer: Any, layout: Any) -> None:
    """Raise a ValueError when a VQ model does not fit a model's vocabulary layout (a [`SequenceLayout`] or a
    [`FlashVideoConfig`]): more codes than `image_vocab_size`, or frames of `image_size` that would not give
    `code_grid_size` grids. Other image tokenizers (icetk) check themselves."""
    if not isinstance(image_tokenizer, VQModel):
        return
    codebook_size = image_tokenizer.config.num_vq_embeddings
    if codebook_size > layout.image_vocab_size:
        raise ValueError(
            f"The image tokenizer's codebook has {codebook_size} codes (num_vq_embeddings), more than "
            f"config.image_vocab_size ({layout.image_vocab_size})."
        )
    factor = vq_downsampling_factor(image_tokenizer)
    if layout.image_size % factor or layout.image_size // factor != layout.code_grid_size:
        raise ValueError(
            f"The image tokenizer downsamples by {factor}, so config.image_size ({layout.image_size}) "
            f"would give a {layout.image_size / factor:g}² code grid, but config.code_grid_size is "
            f"{layout.code_grid_size}."
        )


def image_tokenizer_fingerprint(image_tokenizer: Any) -> str:
    """A hex digest of what the image tokenizer computes (a VQ model's config without its `_` keys, and its
    weights; an adapter's own `fingerprint()`): 🤗 Datasets caches of encoded frames are keyed on it."""
    if not isinstance(image_tokenizer, VQModel):
        return image_tokenizer.fingerprint()
    digest = hashlib.sha256()
    # Keys such as `_name_or_path` record where the model was loaded from, not what it computes.
    config = {key: value for key, value in image_tokenizer.config.items() if not key.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(image_tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_image_tokenizer(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> VQModel:
    """
    The `diffusers.VQModel` of a checkpoint (a local directory or a Hub repo id): its `image_tokenizer/`, or the
    folder that a `processor_config.json` written when the processor held the VQ model names under
    `image_tokenizer_subfolder` (kept inside the checkpoint). A missing or corrupt file is named in the error.

    Example:

    ```python
    >>> import flashvideo
    >>> vq = load_image_tokenizer(flashvideo.default_checkpoint())   # the pipeline's `vqvae`
    ```
    """
    from .processing_flashvideo import PROCESSOR_CONFIG_NAME

    path = Path(pretrained_model_name_or_path)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        check_local_or_repo_id(pretrained_model_name_or_path, "pretrained_model_name_or_path")
        allow = [PROCESSOR_CONFIG_NAME, f"{IMAGE_TOKENIZER_SUBFOLDER}/*"]
        path = Path(snapshot_download(str(pretrained_model_name_or_path), allow_patterns=allow, **hub_kwargs))
    name, config_file = IMAGE_TOKENIZER_SUBFOLDER, path / PROCESSOR_CONFIG_NAME
    if config_file.is_file():
        legacy = read_json(config_file)
        name = legacy.get("image_tokenizer_subfolder", name) if isinstance(legacy, dict) else name
    folder = inside_checkpoint(path, name, "image_tokenizer_subfolder", config_file)
    if not folder.is_dir() and not Path(pretrained_model_name_or_path).is_dir():
        from huggingface_hub import snapshot_download

        snapshot_download(str(pretrained_model_name_or_path), allow_patterns=[f"{name}/*"], **hub_kwargs)
    return load_component(VQModel, folder, required=("config.json",))


def _chunk_size(batch_size: int | None, flat: torch.Tensor) -> int:
    if batch_size is None:
        return max(flat.shape[0], 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    return batch_size


def _check_codes(vq: VQModel, codes: torch.Tensor | np.ndarray) -> torch.LongTensor:
    codes = torch.as_tensor(codes)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}.")
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape [N, h, w], got {tuple(codes.shape)}.")
    codebook_size = vq.config.num_vq_embeddings
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}) (the codebook size), got values in "
            f"[{codes.min().item()}, {codes.max().item()}]."
        )
    return codes.to(device=vq.device, dtype=torch.long)


__all__ = [
    "IMAGE_TOKENIZER_SUBFOLDER",
    "build_vq_model",
    "check_image_tokenizer",
    "codes_to_frames",
    "codes_to_latents",
    "decode_codes",
    "encode_frames",
    "frames_to_codes",
    "frames_to_model_input",
    "image_tokenizer_fingerprint",
    "load_image_tokenizer",
    "vq_downsampling_factor",
]
