"""
FlashVideo processor: caption tokenizer + image tokenizer + the serial-number sequence layout (paper §3.2).

The model reads one token stream built from three vocabularies that the config lays side by side (DESIGN §2):

    [pad, bos, eos] [<SN_1> … <SN_max_frames>] [text tokens] [image codes]

This module turns captions and frames into that stream and back:

- key-frame samples: `[text][SN_1][frame 1][text][SN_2][frame 2] … [text][SN_K][frame K]`;
- interpolation samples between key frames A and B with n inserted frames:
  `[text][SN_1][A][text][SN_{n+2}][B][text][SN_2][F_2] … [text][SN_{n+1}][F_{n+1}]`, reordered afterwards by
  serial number into A, F_2 … F_{n+1}, B;
- the prefixes the pipeline feeds before sampling each frame, id/code conversions, and batch padding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import VQModel
from transformers import PreTrainedTokenizerFast
from transformers.utils import PushToHubMixin, logging

from .configuration_flashvideo import FlashVideoConfig, VocabularyLayout
from .image_tokenizer import decode_codes, encode_frames, vq_downsampling_factor


logger = logging.get_logger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"
TEXT_TOKENIZER_SUBFOLDER = "text_tokenizer"
IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"
IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class SequenceLayout(VocabularyLayout):
    """
    The token-id layout a processor needs: where serial numbers, text tokens and image codes sit in the model
    vocabulary, and the frame geometry. Build it from a model config with [`SequenceLayout.from_config`]; it
    is validated with the same rules as [`FlashVideoConfig`].

    Example:

    ```python
    >>> from flashvideo.configuration_flashvideo import FlashVideoConfig
    >>> from flashvideo.processing_flashvideo import SequenceLayout
    >>> layout = SequenceLayout.from_config(FlashVideoConfig())
    >>> layout.serial_token_id(1) == layout.serial_token_start
    True
    ```
    """

    serial_token_start: int
    max_frames: int
    text_token_start: int
    text_vocab_size: int
    image_token_start: int
    image_vocab_size: int
    code_grid_size: int
    image_size: int
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name.endswith("_token_id"):
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"SequenceLayout.{field.name} must be an integer, got {value!r}.")
        # The config already knows how to check ranges for overlap and sizes for sanity; reuse it.
        FlashVideoConfig(**self.to_dict())

    @classmethod
    def from_config(cls, config: Any) -> SequenceLayout:
        """Read the layout fields from a [`FlashVideoConfig`] (or any object with the same attributes)."""
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    def check_matches(self, config: Any, name: str = "the model config") -> None:
        """Raise a ValueError naming the first layout field in which `config` (a [`FlashVideoConfig`]) disagrees:
        a processor and a model must agree on every id range and on the frame geometry."""
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(config, field.name, None)
            if mine != theirs:
                raise ValueError(
                    f"The processor's layout has {field.name}={mine!r} but {name} has {theirs!r}: they were not "
                    "saved together (a processor and a model must agree on every id range and the frame size)."
                )


class SequenceBuilderMixin:
    """
    Sequence-layout methods shared by the processors (built-in tokenizers and the icetk adapter).

    A class using it provides `layout` (a [`SequenceLayout`]) and `encode_text(text) -> list[int]` returning
    ids already in the model vocabulary.
    """

    layout: SequenceLayout

    @staticmethod
    def _check_text(text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError("text (the prompt) must be a non-empty string with at least one non-space character.")

    # ----------------------------------------------------------------- ids <-> codes

    def codes_to_ids(self, codes: torch.Tensor | np.ndarray | Sequence) -> torch.LongTensor:
        """Move image codes (`[0, image_vocab_size)`, any shape) into the model vocabulary."""
        codes = _as_long_tensor(codes, "codes")
        size = self.layout.image_vocab_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= size):
            raise ValueError(
                f"codes must lie in [0, {size}) (image_vocab_size), got values in "
                f"[{codes.min().item()}, {codes.max().item()}]."
            )
        return codes + self.layout.image_token_start

    def ids_to_codes(self, ids: torch.Tensor | np.ndarray | Sequence) -> torch.LongTensor:
        """Map model ids of image codes (any shape) back to codebook indices; any other id is an error."""
        ids = _as_long_tensor(ids, "ids")
        start, end = self.layout.image_token_range
        outside = (ids < start) | (ids >= end)
        if outside.any():
            bad = ids[outside].reshape(-1)[0].item()
            raise ValueError(
                f"ids must be image-code ids in [{start}, {end}) (image_token_range); got {bad}, which is "
                f"{self._describe_id(bad)}."
            )
        return ids - start

    def _describe_id(self, token_id: int) -> str:
        named = {
            "the pad token": self.layout.pad_token_id,
            "the bos token": self.layout.bos_token_id,
            "the eos token": self.layout.eos_token_id,
        }
        for name, value in named.items():
            if token_id == value:
                return name
        for name, (start, end) in (
            ("a serial-number token", self.layout.serial_token_range),
            ("a text token", self.layout.text_token_range),
        ):
            if start <= token_id < end:
                return name
        return "outside every token range"

    def _frame_ids(self, codes: Any, name: str, frames_axis: bool) -> list[list[int]]:
        """Validate code grids and return each frame's ids, flattened row-major."""
        codes = _as_long_tensor(codes, name)
        grid = self.layout.code_grid_size
        expected = "[num_frames, grid, grid]" if frames_axis else "[grid, grid]"
        if codes.ndim != (3 if frames_axis else 2) or tuple(codes.shape[-2:]) != (grid, grid):
            raise ValueError(
                f"{name} must have shape {expected} with grid = code_grid_size = {grid}, "
                f"got {tuple(codes.shape)}."
            )
        if not frames_axis:
            codes = codes.unsqueeze(0)
        try:
            ids = self.codes_to_ids(codes)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        return ids.reshape(codes.shape[0], grid * grid).tolist()

    # ----------------------------------------------------------------- prefixes (inference)

    def keyframe_prefix(self, text: str, frame_number: int) -> list[int]:
        """
        `[text][SN_frame_number]`: what is fed before the codes of the frame with that serial number are
        sampled.

        This is the prefix of every key frame, and also of the inserted frames F_3 … F_{n+1} of an
        interpolation sample (their serial numbers are 3 … n+1); the first inserted frame's context comes from
        [`interpolation_prefix`].
        """
        return self.encode_text(text) + [self.layout.serial_token_id(frame_number)]

    def interpolation_serial_numbers(self, num_inserted: int) -> list[int]:
        """Serial numbers of an interpolation sample's frames, in generation order: `[1, n+2, 2, …, n+1]`."""
        if (
            isinstance(num_inserted, bool)
            or not isinstance(num_inserted, (int, np.integer))
            or num_inserted < 1
        ):
            raise ValueError(f"num_inserted must be a positive integer, got {num_inserted!r}.")
        if num_inserted + 2 > self.layout.max_frames:
            raise ValueError(
                f"num_inserted + 2 must be at most max_frames ({self.layout.max_frames}) so that B's serial "
                f"number SN_(n+2) exists; got num_inserted={num_inserted}."
            )
        n = int(num_inserted)
        return [1, n + 2, *range(2, n + 2)]

    def interpolation_prefix(self, text: str, frame_a: Any, frame_b: Any, num_inserted: int) -> list[int]:
        """
        `[text][SN_1][A][text][SN_{n+2}][B][text][SN_2]`: the context fed before the first inserted frame F_2
        is sampled. After F_k has been sampled, feed `keyframe_prefix(text, k + 1)` and sample F_{k+1}, up to
        F_{n+1}.

        Args:
            text: the prompt.
            frame_a, frame_b: code grids `[grid, grid]` (codebook indices) of the two key frames.
            num_inserted: n, the number of frames to insert between them.
        """
        serial = self.interpolation_serial_numbers(num_inserted)
        (ids_a,) = self._frame_ids(frame_a, "frame_a", frames_axis=False)
        (ids_b,) = self._frame_ids(frame_b, "frame_b", frames_axis=False)
        text_ids = self.encode_text(text)
        sn = self.layout.serial_token_id
        return [*text_ids, sn(serial[0]), *ids_a, *text_ids, sn(serial[1]), *ids_b, *text_ids, sn(serial[2])]

    # ----------------------------------------------------------------- training samples

    def build_keyframe_sample(
        self, text: str, frame_codes: Any, serial_numbers: Sequence[int] | None = None
    ) -> dict[str, list[int]]:
        """
        Lay out a key-frame sample `[text][SN_1][frame 1][text][SN_2][frame 2] … [text][SN_K][frame K]`.

        Args:
            text: the caption, repeated before every frame (paper §3.2).
            frame_codes: code grids `[K, grid, grid]` (codebook indices `0 … image_vocab_size - 1`).
            serial_numbers: the K serial numbers to use instead of `1 … K` (1-based, at most `max_frames`).

        Returns:
            `{"input_ids": [...], "labels": [...]}` — labels equal the ids on image-code positions and are
            -100 on text and serial-number positions, so the loss is on image codes only.

        Example:

        ```python
        >>> video = np.zeros((16, 64, 64, 3), dtype=np.uint8)  # uint8 [T, H, W, 3]
        >>> codes = processor.encode_frames(video[[0, 5, 10, 15]])  # 4 key frames -> [4, 16, 16]
        >>> sample = processor.build_keyframe_sample("a red circle moving left", codes)
        >>> text_ids = processor.encode_text("a red circle moving left")
        >>> len(sample["input_ids"]) == 4 * (len(text_ids) + 1 + 16 * 16)
        True
        ```
        """
        frames = self._frame_ids(frame_codes, "frame_codes", frames_axis=True)
        if not frames:
            raise ValueError("frame_codes must hold at least one frame (shape [K, grid, grid] with K >= 1).")
        if serial_numbers is None:
            serial_numbers = range(1, len(frames) + 1)
        serial_numbers = list(serial_numbers)
        if len(serial_numbers) != len(frames):
            raise ValueError(
                f"serial_numbers must give one number per frame ({len(frames)}), got {len(serial_numbers)}."
            )
        text_ids = self.encode_text(text)
        return self._assemble(text_ids, [(number, ids, True) for number, ids in zip(serial_numbers, frames)])

    def build_interpolation_sample(
        self, text: str, frame_a: Any, frame_b: Any, middle_frames: Any, label_key_frames: bool = True
    ) -> dict[str, list[int]]:
        """
        Lay out an interpolation sample between key frames A and B with the n frames between them (paper
        §3.2):

            [text][SN_1][A][text][SN_{n+2}][B][text][SN_2][F_2][text][SN_3][F_3] … [text][SN_{n+1}][F_{n+1}]

        Args:
            text: the caption.
            frame_a, frame_b: code grids `[grid, grid]` of the key frames.
            middle_frames: code grids `[n, grid, grid]` of the frames between A and B, in time order (F_2 …
                F_{n+1}).
            label_key_frames: whether A's and B's codes carry labels. By default they do — the loss is on
                every image code (DESIGN §2), and learning to produce B from A is useful signal. At inference
                A and B are given, so `False` (labels -100 on them too) restricts the loss to what the model
                will generate.

        Returns:
            `{"input_ids": [...], "labels": [...]}`, labels -100 on text and serial-number positions.
        """
        middle = self._frame_ids(middle_frames, "middle_frames", frames_axis=True)
        if not middle:
            raise ValueError(
                "middle_frames must hold at least one frame (shape [n, grid, grid] with n >= 1)."
            )
        serial = self.interpolation_serial_numbers(len(middle))
        (ids_a,) = self._frame_ids(frame_a, "frame_a", frames_axis=False)
        (ids_b,) = self._frame_ids(frame_b, "frame_b", frames_axis=False)
        frames = [ids_a, ids_b, *middle]
        labelled = [label_key_frames, label_key_frames] + [True] * len(middle)
        text_ids = self.encode_text(text)
        return self._assemble(text_ids, list(zip(serial, frames, labelled)))

    def _assemble(
        self, text_ids: list[int], segments: list[tuple[int, list[int], bool]]
    ) -> dict[str, list[int]]:
        input_ids: list[int] = []
        labels: list[int] = []
        for serial_number, frame_ids, labelled in segments:
            prefix = [*text_ids, self.layout.serial_token_id(serial_number)]
            input_ids += prefix + frame_ids
            labels += [IGNORE_INDEX] * len(prefix) + (
                frame_ids if labelled else [IGNORE_INDEX] * len(frame_ids)
            )
        return {"input_ids": input_ids, "labels": labels}

    def reorder_interpolated(self, frames_in_generation_order: Any, num_inserted: int) -> Any:
        """
        Reorder the frames of an interpolation sample from generation order `A, B, F_2, …, F_{n+1}` to time
        order `A, F_2, …, F_{n+1}, B` (by serial number).

        `frames_in_generation_order` is indexed along its first axis: a list, a tensor or an array of n + 2
        frames (codes or pixels). The result has the same type.
        """
        serial = self.interpolation_serial_numbers(num_inserted)
        if len(frames_in_generation_order) != len(serial):
            raise ValueError(
                f"frames_in_generation_order must hold num_inserted + 2 = {len(serial)} frames, got "
                f"{len(frames_in_generation_order)}."
            )
        order = sorted(range(len(serial)), key=serial.__getitem__)
        if isinstance(frames_in_generation_order, torch.Tensor):
            index = torch.tensor(order, device=frames_in_generation_order.device)
            return frames_in_generation_order.index_select(0, index)
        if isinstance(frames_in_generation_order, np.ndarray):
            return frames_in_generation_order[order]
        return type(frames_in_generation_order)(frames_in_generation_order[i] for i in order)

    # ----------------------------------------------------------------- batching

    def pad_batch(
        self,
        samples: Sequence[Mapping[str, Any]],
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
    ) -> dict[str, torch.LongTensor]:
        """
        Collate samples (dicts with `input_ids` and optionally `labels`) into padded LongTensors.

        Returns `input_ids` (padded with `pad_token_id`), `attention_mask` (1 on real tokens) and, when the
        samples have them, `labels` (padded with -100). Usable as a `DataLoader` `collate_fn`, e.g.
        `functools.partial(processor.pad_batch, pad_to_multiple_of=8)`.
        """
        if len(samples) == 0:
            raise ValueError("samples must hold at least one sample.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool)
            or not isinstance(pad_to_multiple_of, int)
            or pad_to_multiple_of < 1
        ):
            raise ValueError(
                f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}."
            )
        if self.layout.pad_token_id is None:
            raise ValueError("pad_batch needs a pad_token_id, but the layout's pad_token_id is None.")
        with_labels = ["labels" in sample for sample in samples]
        if any(with_labels) and not all(with_labels):
            raise ValueError("samples must either all have labels or none.")
        ids = [_as_long_tensor(sample["input_ids"], "input_ids").reshape(-1) for sample in samples]
        labels = None
        if all(with_labels):
            labels = [_as_long_tensor(sample["labels"], "labels").reshape(-1) for sample in samples]
            for index, (sample_ids, sample_labels) in enumerate(zip(ids, labels)):
                if sample_ids.shape != sample_labels.shape:
                    raise ValueError(
                        f"sample {index}: labels ({sample_labels.numel()}) and input_ids "
                        f"({sample_ids.numel()}) must have the same length."
                    )
        length = max(sample_ids.numel() for sample_ids in ids)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        batch = {
            "input_ids": torch.full((len(ids), length), self.layout.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(ids), length), dtype=torch.long),
        }
        if labels is not None:
            batch["labels"] = torch.full((len(ids), length), IGNORE_INDEX, dtype=torch.long)
        for row, sample_ids in enumerate(ids):
            size = sample_ids.numel()
            span = slice(0, size) if padding_side == "right" else slice(length - size, length)
            batch["input_ids"][row, span] = sample_ids
            batch["attention_mask"][row, span] = 1
            if labels is not None:
                batch["labels"][row, span] = labels[row]
        return batch


class FlashVideoProcessor(SequenceBuilderMixin, PushToHubMixin):
    """
    Turns captions and frames into FlashVideo token sequences and code grids back into frames.

    It holds the caption tokenizer (a 🤗 `PreTrainedTokenizerFast`, ids offset by `text_token_start` into the
    model vocabulary), the image tokenizer (a `diffusers.VQModel`, codes offset by `image_token_start`) and
    the [`SequenceLayout`] of the model config.

    Args:
        text_tokenizer: caption tokenizer; its size must fit `config.text_vocab_size`.
        image_tokenizer: VQ model; its codebook must fit `config.image_vocab_size` and it must map
            `image_size²` frames to `code_grid_size²` grids.
        config: a [`FlashVideoConfig`] or a [`SequenceLayout`].

    Example:

    ```python
    >>> import numpy as np
    >>> from flashvideo import FlashVideoConfig
    >>> from flashvideo.image_tokenizer import build_vq_model
    >>> from flashvideo.processing_flashvideo import FlashVideoProcessor
    >>> from flashvideo.text_tokenizer import build_text_tokenizer
    >>> config = FlashVideoConfig()
    >>> processor = FlashVideoProcessor(
    ...     build_text_tokenizer(["a red circle moving left"], vocab_size=config.text_vocab_size),
    ...     build_vq_model(config.image_size, config.code_grid_size, config.image_vocab_size),
    ...     config,
    ... )
    >>> frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    >>> codes = processor.encode_frames(frames)  # uint8 [4, 64, 64, 3] -> codebook indices [4, 16, 16]
    >>> sample = processor.build_keyframe_sample("a red circle moving left", codes)
    >>> processor.save_pretrained("checkpoint")
    >>> processor = FlashVideoProcessor.from_pretrained("checkpoint")
    ```
    """

    def __init__(
        self,
        text_tokenizer: PreTrainedTokenizerFast,
        image_tokenizer: VQModel,
        config: FlashVideoConfig | SequenceLayout,
    ) -> None:
        layout = config if isinstance(config, SequenceLayout) else SequenceLayout.from_config(config)
        if len(text_tokenizer) > layout.text_vocab_size:
            raise ValueError(
                f"The text tokenizer has {len(text_tokenizer)} tokens, more than config.text_vocab_size "
                f"({layout.text_vocab_size}); raise text_vocab_size or build a smaller tokenizer."
            )
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
        self.text_tokenizer = text_tokenizer
        self.image_tokenizer = image_tokenizer
        self.layout = layout

    @classmethod
    def from_config_values(
        cls, text_tokenizer: PreTrainedTokenizerFast, image_tokenizer: VQModel, **config_values: Any
    ) -> FlashVideoProcessor:
        """
        Build a processor from layout values instead of a config object; `config_values` are
        [`FlashVideoConfig`] keyword arguments (e.g. `text_vocab_size=64, image_size=32, code_grid_size=8`),
        and the ranges left unspecified are placed as the config places them.
        """
        return cls(text_tokenizer, image_tokenizer, FlashVideoConfig(**config_values))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(text_tokenizer={len(self.text_tokenizer)} tokens, "
            f"image_tokenizer=VQModel(codebook {self.image_tokenizer.config.num_vq_embeddings}), "
            f"layout={self.layout})"
        )

    # ----------------------------------------------------------------- text

    def encode_text(self, text: str) -> list[int]:
        """Tokenize a caption into model-vocabulary ids (text-tokenizer ids + `text_token_start`)."""
        self._check_text(text)
        ids = self.text_tokenizer.encode(text, add_special_tokens=False)
        return [token_id + self.layout.text_token_start for token_id in ids]

    def decode_text(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Turn model-vocabulary text ids back into a (normalized) caption."""
        ids = _as_long_tensor(ids, "ids").reshape(-1)
        start, end = self.layout.text_token_range
        if ids.numel() and (ids.min() < start or ids.max() >= end):
            raise ValueError(f"ids must be text ids in [{start}, {end}) (text_token_range).")
        return self.text_tokenizer.decode((ids - start).tolist())

    # ----------------------------------------------------------------- frames

    def encode_frames(
        self, frames: np.ndarray | torch.Tensor, batch_size: int | None = None
    ) -> torch.LongTensor:
        """
        Encode frames into code grids (codebook indices, not yet offset into the model vocabulary).

        Args:
            frames: uint8 `[..., H, W, 3]` (numpy or torch) or float torch `[..., 3, H, W]` in `[-1, 1]`, with
                `H = W = image_size`; any leading dimensions.
            batch_size: how many frames go through the VQ model at once (all at once when `None`).

        Returns:
            LongTensor `[..., grid, grid]` on the image tokenizer's device.
        """
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8:
                raise ValueError(
                    f"frames given as a numpy array must be uint8 [..., H, W, 3], got dtype {frames.dtype}."
                )
            # torch cannot wrap read-only arrays (e.g. from 🤗 Datasets); those are copied.
            frames = torch.from_numpy(np.require(frames, requirements=["C", "W"]))
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or a torch tensor, got {type(frames).__name__}.")
        size = self.layout.image_size
        channels_last = frames.dtype == torch.uint8
        expected = (size, size, 3) if channels_last else (3, size, size)
        if frames.ndim < 3 or tuple(frames.shape[-3:]) != expected:
            layout = "uint8 [..., H, W, 3]" if channels_last else "float [..., 3, H, W]"
            raise ValueError(
                f"frames must be {layout} with H = W = image_size = {size}, got shape {tuple(frames.shape)}."
            )
        leading = tuple(frames.shape[:-3])
        flat = frames.reshape(-1, *expected)
        grid = self.layout.code_grid_size
        chunks = [
            encode_frames(self.image_tokenizer, chunk) for chunk in flat.split(_chunk_size(batch_size, flat))
        ]
        codes = torch.cat(chunks) if chunks else torch.empty((0, grid, grid), dtype=torch.long)
        return codes.reshape(*leading, grid, grid)

    def decode_frames(self, codes: torch.Tensor | np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """
        Decode code grids `[..., grid, grid]` (codebook indices) to uint8 frames `[..., H, W, 3]`.

        Use [`ids_to_codes`] first for generated model ids.
        """
        codes = _as_long_tensor(codes, "codes")
        grid = self.layout.code_grid_size
        if codes.ndim < 2 or tuple(codes.shape[-2:]) != (grid, grid):
            raise ValueError(
                f"codes must have shape [..., {grid}, {grid}] (code_grid_size), got {tuple(codes.shape)}."
            )
        leading = tuple(codes.shape[:-2])
        flat = codes.reshape(-1, grid, grid)
        size = self.layout.image_size
        chunks = [
            decode_codes(self.image_tokenizer, chunk) for chunk in flat.split(_chunk_size(batch_size, flat))
        ]
        frames = np.concatenate(chunks) if chunks else np.empty((0, size, size, 3), dtype=np.uint8)
        return frames.reshape(*leading, size, size, 3)

    def to(self, *args: Any, **kwargs: Any) -> FlashVideoProcessor:
        """Move the image tokenizer (`VQModel.to` arguments); returns `self`."""
        self.image_tokenizer.to(*args, **kwargs)
        return self

    # ----------------------------------------------------------------- identity, saving and loading

    def fingerprint(self) -> str:
        """
        A hex digest that changes whenever the layout, the text tokenizer or the image tokenizer's config or
        weights change; 🤗 Datasets caches of tokenized data are keyed on it.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self.layout.to_dict(), sort_keys=True).encode())
        tokenizer = json.loads(self.text_tokenizer.backend_tokenizer.to_str())
        # Padding/truncation settings change with use (a `truncation=True` call stores them), not the ids.
        tokenizer.pop("padding", None)
        tokenizer.pop("truncation", None)
        digest.update(json.dumps(tokenizer, sort_keys=True).encode())
        # Keys such as `_name_or_path` record where the model was loaded from, not what it computes.
        vq_config = {
            key: value for key, value in self.image_tokenizer.config.items() if not key.startswith("_")
        }
        digest.update(json.dumps(vq_config, sort_keys=True).encode())
        for name, tensor in sorted(self.image_tokenizer.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save_pretrained(
        self, save_directory: str | os.PathLike, max_shard_size: int | str = "10GB", **kwargs: Any
    ) -> None:
        """
        Save to `save_directory`:

        - `processor_config.json`: the layout;
        - `text_tokenizer/`: the caption tokenizer (`tokenizer.json`, `tokenizer_config.json`);
        - `image_tokenizer/`: the VQ model (`config.json`, safetensors weights).

        `push_to_hub(repo_id)` (from `PushToHubMixin`) saves this way into a temporary folder and uploads it.
        """
        if kwargs:
            logger.warning(f"FlashVideoProcessor.save_pretrained ignores the arguments {sorted(kwargs)}.")
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_directory ({save_directory}) must be a directory, not a file.")
        save_directory.mkdir(parents=True, exist_ok=True)
        self.text_tokenizer.save_pretrained(save_directory / TEXT_TOKENIZER_SUBFOLDER)
        self.image_tokenizer.save_pretrained(
            save_directory / IMAGE_TOKENIZER_SUBFOLDER, safe_serialization=True, max_shard_size=max_shard_size
        )
        processor_config = {
            "processor_class": type(self).__name__,
            "text_tokenizer_subfolder": TEXT_TOKENIZER_SUBFOLDER,
            "image_tokenizer_subfolder": IMAGE_TOKENIZER_SUBFOLDER,
            "layout": self.layout.to_dict(),
        }
        with open(save_directory / PROCESSOR_CONFIG_NAME, "w", encoding="utf-8") as handle:
            json.dump(processor_config, handle, indent=2, sort_keys=True)
            handle.write("\n")
        logger.info(f"FlashVideo processor saved in {save_directory}")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any
    ) -> FlashVideoProcessor:
        """
        Load a processor saved with [`save_pretrained`] from a local directory or a Hub repo id.

        Args:
            pretrained_model_name_or_path: a local directory, or a Hub repo id (fetched with
                `huggingface_hub.snapshot_download`, which works offline from the cache with
                `HF_HUB_OFFLINE=1`).
            subfolder: where inside the directory or repo the processor files are.
            hub_kwargs: passed to `snapshot_download` (`revision`, `cache_dir`, `token`, `local_files_only`,
                …).
        """
        from .hub import check_local_or_repo_id

        path = Path(pretrained_model_name_or_path)
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            check_local_or_repo_id(pretrained_model_name_or_path, "pretrained_model_name_or_path")

            allow = [
                f"{prefix}{PROCESSOR_CONFIG_NAME}",
                f"{prefix}{TEXT_TOKENIZER_SUBFOLDER}/*",
                f"{prefix}{IMAGE_TOKENIZER_SUBFOLDER}/*",
            ]
            path = Path(
                snapshot_download(str(pretrained_model_name_or_path), allow_patterns=allow, **hub_kwargs)
            )
        elif hub_kwargs:
            logger.info(f"Loading from the local directory {path}; ignoring {sorted(hub_kwargs)}.")
        if prefix:
            path = path / prefix
        config_file = path / PROCESSOR_CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"No {PROCESSOR_CONFIG_NAME} in {path}: it is not a FlashVideo processor directory "
                "(write one with FlashVideoProcessor.save_pretrained)."
            )
        processor_config = _read_json(config_file)
        if not isinstance(processor_config, dict):
            raise ValueError(f"{config_file} must hold a JSON object, got {type(processor_config).__name__}.")
        layout_values = processor_config.get("layout")
        if not isinstance(layout_values, dict):
            raise ValueError(f"{config_file} has no 'layout' object.")
        field_names = {field.name for field in dataclasses.fields(SequenceLayout)}
        missing = sorted(field_names - set(layout_values))
        if missing:
            raise ValueError(f"{config_file}: the layout lacks {missing}.")
        layout = SequenceLayout(**{name: layout_values[name] for name in field_names})
        text_folder = _subfolder(path, processor_config, "text_tokenizer_subfolder", TEXT_TOKENIZER_SUBFOLDER)
        image_folder = _subfolder(path, processor_config, "image_tokenizer_subfolder", IMAGE_TOKENIZER_SUBFOLDER)
        text_tokenizer = _load_component(
            PreTrainedTokenizerFast, text_folder, required=("tokenizer.json",), optional=("tokenizer_config.json",)
        )
        image_tokenizer = _load_component(VQModel, image_folder, required=("config.json",))
        return cls(text_tokenizer, image_tokenizer, layout)


def _read_json(path: Path) -> Any:
    """The JSON in `path`; a file that is not valid JSON is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON (corrupt or truncated?): {error}") from None


def _subfolder(root: Path, processor_config: dict, key: str, default: str) -> Path:
    """`processor_config[key]`, a folder that must stay inside the checkpoint `root` (no absolute path, no `..`
    out of it, no symlink out of it)."""
    name = processor_config.get(key, default)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{root / PROCESSOR_CONFIG_NAME}: {key} must be a folder name, got {name!r}.")
    folder = root / name
    if Path(name).is_absolute() or not folder.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"{root / PROCESSOR_CONFIG_NAME}: {key} {name!r} points outside the checkpoint {root}; the processor's "
            "files must be inside it."
        )
    return folder


def _load_component(loader: Any, folder: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Any:
    """`loader.from_pretrained(folder)`, after checking that its `required` files are there and that its JSON files
    parse, so that a missing or corrupt file is named; other load errors name the folder."""
    for name in required:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: the processor checkpoint is incomplete.")
    for name in (*required, *optional):
        if name.endswith(".json") and (folder / name).is_file():
            _read_json(folder / name)
    try:
        return loader.from_pretrained(str(folder))
    except OSError as error:
        raise OSError(f"Could not load {loader.__name__} from {folder}: {error}") from None
    except Exception as error:  # tokenizers and safetensors raise their own exception types
        raise ValueError(f"Could not load {loader.__name__} from {folder}: {type(error).__name__}: {error}") from None


def _as_long_tensor(values: Any, name: str) -> torch.LongTensor:
    """Integer values (tensor, array, nested lists) as a LongTensor; anything non-integer is a ValueError."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name} must be integers (a tensor, an array or nested lists): {error}"
            ) from None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        if tensor.numel():  # an empty list comes back as float64; that is no reason to fail
            raise ValueError(f"{name} must be integers, got dtype {tensor.dtype}.")
    return tensor.long()


def _chunk_size(batch_size: int | None, flat: torch.Tensor) -> int:
    if batch_size is None:
        return max(flat.shape[0], 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    return batch_size


__all__ = ["FlashVideoProcessor", "SequenceBuilderMixin", "SequenceLayout"]
