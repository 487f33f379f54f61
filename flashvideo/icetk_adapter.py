"""
Adapter for icetk, the tokenizer of the paper (and of CogView2/CogVideo), as an optional extra
`flashvideo[icetk]`.

icetk shares one id space between 20,000 image codes (ids `0 … 19,999`) and a SentencePiece text vocabulary
(ids from 20,000 up). FlashVideo's vocabulary keeps its own layout (DESIGN §2), so the adapter maps

- icetk image code `c` → `image_token_start + c` (the config needs `image_vocab_size >= 20000`);
- icetk text id `t` (≥ 20,000) → `t − 20000 + text_token_start`.

Nothing is downloaded. The two model files come from a directory the user names:

- `ice_text.model`: the SentencePiece text model, loaded with the `sentencepiece` package;
- `ice_image.pt`: icetk's image tokenizer checkpoint. Image encoding and decoding run icetk's own VQVAE, so
  they need the `icetk` package — which imports torchvision at module level; where torchvision cannot be
  imported, the image methods raise an `ImportError` that says so, while text tokenization keeps working.

Installing (see the README): the torch/torchvision pair of your machine first, then
`pip install "flashvideo[icetk]"` and `pip install --no-deps icetk` (icetk's own requirements pin
protobuf<3.19). icetk's generated protobuf code predates protobuf 4, whose default implementations refuse it
("Descriptors cannot be created directly"); icetk is therefore imported here on protobuf's pure-Python
implementation, which still runs it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .configuration_flashvideo import FlashVideoConfig
from .image_tokenizer import _chunk_size, frames_to_model_input
from .processing_flashvideo import SequenceBuilderMixin, SequenceLayout, _as_long_tensor


logger = logging.get_logger(__name__)

ICETK_TEXT_FILE = "ice_text.model"
ICETK_IMAGE_FILE = "ice_image.pt"
ICETK_NUM_IMAGE_TOKENS = 20_000
ICETK_COMPRESS_RATES = (4, 8, 16)
ICETK_INSTALL_HINT = (
    "install the torchvision release paired with your torch, then `pip install 'flashvideo[icetk]'` (from a "
    "checkout: `pip install '.[icetk]'`) and `pip install --no-deps icetk`"
)
PROTOBUF_IMPLEMENTATION_VARIABLE = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"


@contextlib.contextmanager
def _pure_python_protobuf() -> Iterator[None]:
    """
    Let protobuf, if it is first imported inside this block, pick its pure-Python implementation, which still
    runs generated code older than protobuf 4 (icetk's `sentencepiece_model_pb2`). protobuf fixes its
    implementation when first imported, so the variable is only set for that import, and a value the user set
    is left alone.
    """
    if "google.protobuf" in sys.modules or PROTOBUF_IMPLEMENTATION_VARIABLE in os.environ:
        yield
        return
    os.environ[PROTOBUF_IMPLEMENTATION_VARIABLE] = "python"
    try:
        yield
    finally:
        os.environ.pop(PROTOBUF_IMPLEMENTATION_VARIABLE, None)


def _protobuf_implementation() -> str:
    from google.protobuf.internal import api_implementation

    return api_implementation.Type()


@functools.lru_cache(maxsize=1)
def icetk_import_error() -> ImportError | None:
    """
    `None` when the `icetk` package imports, otherwise the `ImportError` explaining why not.

    icetk imports torchvision at module level; a torchvision build that does not match the installed torch
    fails with a `RuntimeError` (e.g. `operator torchvision::nms does not exist`), which is reported as an
    ImportError too. icetk is imported on protobuf's pure-Python implementation where protobuf is not imported
    yet (see the module docstring); where it already is, with another implementation, the error says so.
    """
    try:
        with _pure_python_protobuf():
            import icetk  # noqa: F401
    except Exception as error:  # torchvision mismatches raise RuntimeError, not ImportError
        message = f"{type(error).__name__}: {error}"
        if "Descriptors cannot be created directly" in message:
            message = (
                "icetk's generated protobuf code needs protobuf's pure-Python implementation, but protobuf "
                f"was imported before icetk with its {_protobuf_implementation()!r} implementation. Load "
                "icetk (flashvideo.icetk_adapter.icetk_import_error() does) before anything that imports "
                "protobuf, such as tensorboard, or start Python with "
                f"{PROTOBUF_IMPLEMENTATION_VARIABLE}=python ({message.splitlines()[0]})"
            )
        return error if isinstance(error, ImportError) else ImportError(message)
    return None


class IcetkTokenizer(SequenceBuilderMixin):
    """
    icetk text and image tokenization mapped into a FlashVideo vocabulary, with the same sequence-layout
    methods as [`FlashVideoProcessor`] (`build_keyframe_sample`, `build_interpolation_sample`, prefixes, …). It is
    both of a pipeline's tokenizers: `FlashVideoPipeline(model, processor=tokenizer, vqvae=tokenizer)`.

    Args:
        model_dir: directory holding `ice_text.model` and `ice_image.pt` (icetk itself keeps them in
            `~/.icetk_models`).
        config: a [`FlashVideoConfig`] or [`SequenceLayout`] with `image_vocab_size >= 20000`, a text range
            that holds the SentencePiece vocabulary, and `image_size / code_grid_size` equal to one of icetk's
            compression rates (4, 8 or 16; e.g. 256² frames → 32² codes at rate 8).
        device: where icetk's image tokenizer runs.
        fp16: run icetk's image tokenizer in half precision (as icetk does by default on GPU).

    Example:

    ```python
    >>> from flashvideo import FlashVideoConfig
    >>> from flashvideo.icetk_adapter import IcetkTokenizer
    >>> config = FlashVideoConfig(
    ...     text_vocab_size=130_000, image_vocab_size=20_000, image_size=256, code_grid_size=32
    ... )
    >>> tokenizer = IcetkTokenizer("~/.icetk_models", config)
    >>> ids = tokenizer.encode_text("a red circle moving left")  # text works without the icetk package
    >>> codes = tokenizer.encode_frames(frames)  # uint8 [N, 256, 256, 3] -> [N, 32, 32]; needs icetk
    ```
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        config: FlashVideoConfig | SequenceLayout,
        *,
        device: str | torch.device = "cpu",
        fp16: bool = False,
    ) -> None:
        self.model_dir = Path(model_dir).expanduser()
        missing = [
            name for name in (ICETK_TEXT_FILE, ICETK_IMAGE_FILE) if not (self.model_dir / name).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"icetk model file(s) {', '.join(missing)} not found in {self.model_dir}. Put "
                f"{ICETK_TEXT_FILE} (icetk's SentencePiece text model) and {ICETK_IMAGE_FILE} (icetk's image "
                "tokenizer checkpoint) into that directory; FlashVideo never downloads them."
            )
        layout = config if isinstance(config, SequenceLayout) else SequenceLayout.from_config(config)
        if layout.image_vocab_size < ICETK_NUM_IMAGE_TOKENS:
            raise ValueError(
                f"config.image_vocab_size ({layout.image_vocab_size}) must be at least "
                f"{ICETK_NUM_IMAGE_TOKENS}, the number of icetk image codes."
            )
        rate = layout.image_size // layout.code_grid_size
        if layout.image_size % layout.code_grid_size or rate not in ICETK_COMPRESS_RATES:
            raise ValueError(
                f"config.image_size / config.code_grid_size ({layout.image_size} / {layout.code_grid_size}) "
                f"must be one of icetk's compression rates {ICETK_COMPRESS_RATES}."
            )
        try:
            import sentencepiece
        except ImportError as error:
            raise ImportError(
                f"The icetk tokenizer needs the `sentencepiece` package: {ICETK_INSTALL_HINT}."
            ) from error

        self._sentencepiece = sentencepiece.SentencePieceProcessor(
            model_file=str(self.model_dir / ICETK_TEXT_FILE)
        )
        if self.num_text_tokens > layout.text_vocab_size:
            raise ValueError(
                f"{ICETK_TEXT_FILE} has {self.num_text_tokens} tokens, more than config.text_vocab_size "
                f"({layout.text_vocab_size})."
            )
        self.layout = layout
        self.compress_rate = rate
        self.device = torch.device(device)
        self.fp16 = fp16
        self._icetk = None

    @property
    def num_text_tokens(self) -> int:
        return self._sentencepiece.vocab_size()

    # ----------------------------------------------------------------- text

    def encode_text(self, text: str) -> list[int]:
        """Tokenize a caption with icetk's SentencePiece model into model-vocabulary ids."""
        self._check_text(text)
        return [token_id + self.layout.text_token_start for token_id in self._sentencepiece.encode(text)]

    def decode_text(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Turn model-vocabulary text ids back into text."""
        ids = _as_long_tensor(ids, "ids").reshape(-1)
        start = self.layout.text_token_start
        if ids.numel() and (ids.min() < start or ids.max() >= start + self.num_text_tokens):
            raise ValueError(f"ids must be text ids in [{start}, {start + self.num_text_tokens}).")
        return self._sentencepiece.decode((ids - start).tolist())

    # ----------------------------------------------------------------- icetk id space

    def icetk_to_model_ids(self, ids: Sequence[int] | torch.Tensor) -> torch.LongTensor:
        """Map icetk's shared ids (image codes below 20000, text from 20000) to model-vocabulary ids."""
        ids = _as_long_tensor(ids, "ids")
        end = ICETK_NUM_IMAGE_TOKENS + self.num_text_tokens
        if ids.numel() and (ids.min() < 0 or ids.max() >= end):
            raise ValueError(f"ids must be icetk ids in [0, {end}).")
        is_image = ids < ICETK_NUM_IMAGE_TOKENS
        text_ids = ids - ICETK_NUM_IMAGE_TOKENS + self.layout.text_token_start
        return torch.where(is_image, ids + self.layout.image_token_start, text_ids)

    def model_to_icetk_ids(self, ids: Sequence[int] | torch.Tensor) -> torch.LongTensor:
        """Inverse of [`icetk_to_model_ids`]; ids outside the text and icetk image ranges are an error."""
        ids = _as_long_tensor(ids, "ids")
        image_start, text_start = self.layout.image_token_start, self.layout.text_token_start
        is_image = (ids >= image_start) & (ids < image_start + ICETK_NUM_IMAGE_TOKENS)
        is_text = (ids >= text_start) & (ids < text_start + self.num_text_tokens)
        if not (is_image | is_text).all():
            bad = ids[~(is_image | is_text)].reshape(-1)[0].item()
            raise ValueError(
                f"ids must be icetk text ids [{text_start}, {text_start + self.num_text_tokens}) or image "
                f"ids [{image_start}, {image_start + ICETK_NUM_IMAGE_TOKENS}); got {bad}."
            )
        return torch.where(is_image, ids - image_start, ids - text_start + ICETK_NUM_IMAGE_TOKENS)

    # ----------------------------------------------------------------- images

    def load_image_checkpoint(self) -> dict[str, Any]:
        """Load `ice_image.pt` as plain weights (`torch.load(..., weights_only=True)`), on the CPU."""
        path = self.model_dir / ICETK_IMAGE_FILE
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} is not a plain weights checkpoint: it is loaded with torch.load(weights_only=True), "
                f"which refuses arbitrary pickled objects ({error})."
            ) from None

    def _icetk_tokenizer(self) -> Any:
        if self._icetk is None:
            error = icetk_import_error()
            if error is not None:
                raise ImportError(
                    f"icetk's image tokenizer needs the `icetk` package, which cannot be imported ({error}). "
                    f"icetk imports torchvision at module level, so with torch {torch.__version__}: "
                    f"{ICETK_INSTALL_HINT}. Text tokenization works without it."
                ) from error
            # Refuse a checkpoint that is more than weights before icetk's own loader unpickles it.
            self.load_image_checkpoint()
            from icetk.ice_tokenizer import IceTokenizer

            # The files are present (checked in __init__), so icetk's download-on-first-use never triggers.
            self._icetk = IceTokenizer(path=str(self.model_dir), device=str(self.device), fp16=self.fp16)
            logger.info(f"Loaded icetk's image tokenizer from {self.model_dir / ICETK_IMAGE_FILE}")
        return self._icetk

    @property
    def image_tokenizer(self) -> Any:
        """icetk's own image tokenizer (`icetk.image_tokenizer.ImageTokenizer`), loaded on first use."""
        return self._icetk_tokenizer().image_tokenizer

    def to(self, device: str | torch.device) -> IcetkTokenizer:
        """Run icetk's image tokenizer on `device`, like a VQ model's `.to`; the pipeline calls it on its `vqvae`."""
        self.device = torch.device(device)
        if self._icetk is not None:
            self._icetk.configure(device=str(self.device))
            if "_image_tokenizer" in vars(self._icetk):
                image_tokenizer = self._icetk.image_tokenizer
                image_tokenizer.model.to(self.device)
                image_tokenizer.device = str(self.device)
        return self

    def encode_frames(
        self, frames: np.ndarray | torch.Tensor, batch_size: int | None = None
    ) -> torch.LongTensor:
        """
        Encode frames (uint8 `[N, H, W, 3]` or float `[N, 3, H, W]` in `[-1, 1]`, `H = W = image_size`) into
        icetk code grids `[N, grid, grid]` (indices `0 … 19,999`).
        """
        tokenizer = self._icetk_tokenizer()
        pixels = frames_to_model_input(frames)
        size = self.layout.image_size
        if tuple(pixels.shape[-2:]) != (size, size):
            raise ValueError(f"frames must be {size}×{size} (image_size), got {tuple(pixels.shape[-2:])}.")
        grid = self.layout.code_grid_size
        codes = []
        for chunk in pixels.split(_chunk_size(batch_size, pixels)):
            # icetk normalizes images given in [0, 1] itself.
            ids = tokenizer.encode(image_torch=(chunk + 1.0) / 2.0, compress_rate=self.compress_rate)
            codes.append(ids.reshape(-1, grid, grid).long())
        return torch.cat(codes) if codes else torch.empty((0, grid, grid), dtype=torch.long)

    def decode_frames(self, codes: torch.Tensor | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """
        Decode icetk code grids `[..., grid, grid]` into uint8 frames `[..., H, W, 3]` (any leading
        dimensions, as [`FlashVideoProcessor.decode_frames`]).
        """
        tokenizer = self._icetk_tokenizer()
        codes = _as_long_tensor(codes, "codes")
        grid = self.layout.code_grid_size
        if codes.ndim < 2 or tuple(codes.shape[-2:]) != (grid, grid):
            raise ValueError(f"codes must have shape [..., {grid}, {grid}], got {tuple(codes.shape)}.")
        if codes.numel() and (codes.min() < 0 or codes.max() >= ICETK_NUM_IMAGE_TOKENS):
            raise ValueError(f"codes must lie in [0, {ICETK_NUM_IMAGE_TOKENS}) (icetk image codes).")
        leading = tuple(codes.shape[:-2])
        flat = codes.reshape(-1, grid, grid)
        frames = []
        for chunk in flat.split(_chunk_size(batch_size, flat)):
            images = tokenizer.decode(image_ids=chunk.to(self.device), compress_rate=self.compress_rate)
            pixels = images.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
            frames.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
        size = self.layout.image_size
        frames = np.concatenate(frames) if frames else np.empty((0, size, size, 3), dtype=np.uint8)
        return frames.reshape(*leading, size, size, 3)

    def fingerprint(self) -> str:
        """A hex digest of the layout and both model files (for 🤗 Datasets caching)."""
        digest = hashlib.sha256(json.dumps(self.layout.to_dict(), sort_keys=True).encode())
        for name in (ICETK_TEXT_FILE, ICETK_IMAGE_FILE):
            with open(self.model_dir / name, "rb") as handle:
                for block in iter(functools.partial(handle.read, 1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


__all__ = [
    "ICETK_IMAGE_FILE",
    "ICETK_NUM_IMAGE_TOKENS",
    "ICETK_TEXT_FILE",
    "IcetkTokenizer",
    "icetk_import_error",
]
