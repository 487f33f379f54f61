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

import math
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import VQModel


FrameArray = np.ndarray | torch.Tensor


def build_vq_model(
    image_size: int = 64,
    code_grid_size: int = 16,
    codebook_size: int = 512,
    *,
    block_out_channels: Sequence[int] | None = None,
    vq_embed_dim: int = 32,
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
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
    "build_vq_model",
    "codes_to_latents",
    "decode_codes",
    "encode_frames",
    "frames_to_model_input",
    "vq_downsampling_factor",
]
