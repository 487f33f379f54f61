"""
FlashVideo processor: caption tokenizer + the serial-number sequence layout (paper §3.2). No weights: frames become
codes through the image tokenizer (`image_tokenizer.py`), a pipeline component of its own.

The model reads one token stream built from three vocabularies that the config lays side by side (DESIGN §2):

    [pad, bos, eos] [<SN_1> … <SN_max_frames>] [text tokens] [image codes]

This module turns captions and code grids into that stream and back:

- key-frame samples: `[text][SN_1][frame 1][text][SN_2][frame 2] … [text][SN_K][frame K]`;
- interpolation samples between key frames A and B with n inserted frames:
  `[text][SN_1][A][text][SN_{n+2}][B][text][SN_2][F_2] … [text][SN_{n+1}][F_{n+1}]`, reordered afterwards by
  serial number into A, F_2 … F_{n+1}, B (the inserted frames in the paper's forward order, or outside in:
  `interpolation_order`);
- the prefixes the pipeline feeds before sampling each frame, and id/code conversions.

Batches of samples are padded by `flashvideo.data.collate.pad_batch`, with the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchEncoding, PreTrainedTokenizerFast, ProcessorMixin
from transformers.utils import logging

from .checkpoint_files import check_local_or_repo_id, inside_checkpoint, load_component, read_json
from .configuration_flashvideo import INTERPOLATION_ORDERS, FlashVideoConfig, VocabularyLayout
from .validation import check_choice


logger = logging.get_logger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"
TEXT_TOKENIZER_SUBFOLDER = "text_tokenizer"
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
    # Batches of prompts are padded on the right with the layout's pad id (what transformers' pipeline collator
    # asks of the pipeline's tokenizer, which a processor is); the lengths travel beside them.
    padding_side = "right"

    @property
    def pad_token_id(self) -> int | None:
        return self.layout.pad_token_id

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

    def text_ids(self, text: str | Sequence[int]) -> list[int]:
        """`text` in model-vocabulary ids: a caption is tokenized ([`encode_text`]); a sequence of ids is taken as
        already tokenized, so that a caller that feeds one prompt many times tokenizes it once."""
        if isinstance(text, str):
            return self.encode_text(text)
        return [int(token_id) for token_id in text]

    def keyframe_prefix(self, text: str | Sequence[int], frame_number: int) -> list[int]:
        """
        `[text][SN_frame_number]`: what is fed before the codes of the frame with that serial number are
        sampled. `text` is a caption or its ids from [`encode_text`].

        This is the prefix of every key frame, and also of an interpolation sample's inserted frames after the
        first (`frame_number` is the frame's serial number); the first inserted frame's context comes from
        [`interpolation_prefix`].
        """
        return self.text_ids(text) + [self.layout.serial_token_id(frame_number)]

    def interpolation_serial_numbers(self, num_inserted: int, order: str = "forward") -> list[int]:
        """
        Serial numbers of an interpolation sample's frames, in generation order: A, B, then the inserted frames,
        `[1, n+2, 2, 3, …, n+1]` in the paper's "forward" order, `[1, n+2, 2, n+1, 3, n, …]` "outside_in"
        (`FlashVideoConfig.interpolation_order`). The one definition of the generation order: samples, prefixes and
        the reordering into time order all follow it.

        Example:

        ```python
        >>> processor.interpolation_serial_numbers(4), processor.interpolation_serial_numbers(4, "outside_in")
        ([1, 6, 2, 3, 4, 5], [1, 6, 2, 5, 3, 4])
        ```
        """
        check_choice("order", order, INTERPOLATION_ORDERS)
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
        inserted = list(range(2, n + 2))
        if order == "outside_in":  # alternately the earliest and the latest still missing: 2, n+1, 3, n, …
            inserted = [inserted[i // 2] if i % 2 == 0 else inserted[-1 - i // 2] for i in range(n)]
        return [1, n + 2, *inserted]

    def interpolation_prefix(
        self, text: str | Sequence[int], frame_a: Any, frame_b: Any, num_inserted: int, order: str = "forward"
    ) -> list[int]:
        """
        `[text][SN_1][A][text][SN_{n+2}][B][text][SN_2]`: the context fed before the first inserted frame F_2
        is sampled. After it, feed `keyframe_prefix(text, s)` before each further inserted frame, s running
        through the rest of `interpolation_serial_numbers(num_inserted, order)` (3, 4, … in the forward order).

        Args:
            text: the prompt, or its ids from [`encode_text`].
            frame_a, frame_b: code grids `[grid, grid]` (codebook indices) of the two key frames.
            num_inserted: n, the number of frames to insert between them.
            order: the interpolation model's `config.interpolation_order`.
        """
        serial = self.interpolation_serial_numbers(num_inserted, order)
        (ids_a,) = self._frame_ids(frame_a, "frame_a", frames_axis=False)
        (ids_b,) = self._frame_ids(frame_b, "frame_b", frames_axis=False)
        text_ids = self.text_ids(text)
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
        self,
        text: str,
        frame_a: Any,
        frame_b: Any,
        middle_frames: Any,
        label_key_frames: bool = True,
        order: str = "forward",
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
            order: the order of the inserted frames after A and B ([`interpolation_serial_numbers`]): "forward"
                (the layout above) or "outside_in" (`[SN_2][F_2][SN_{n+1}][F_{n+1}][SN_3][F_3] …`).

        Returns:
            `{"input_ids": [...], "labels": [...]}`, labels -100 on text and serial-number positions.
        """
        middle = self._frame_ids(middle_frames, "middle_frames", frames_axis=True)
        if not middle:
            raise ValueError(
                "middle_frames must hold at least one frame (shape [n, grid, grid] with n >= 1)."
            )
        serial = self.interpolation_serial_numbers(len(middle), order)
        (ids_a,) = self._frame_ids(frame_a, "frame_a", frames_axis=False)
        (ids_b,) = self._frame_ids(frame_b, "frame_b", frames_axis=False)
        frames = [ids_a, ids_b, *(middle[number - 2] for number in serial[2:])]  # F_s is middle frame s - 2
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

    def interpolation_time_offsets(self, num_inserted: int, order: str = "forward") -> list[int]:
        """
        Where each frame of an interpolation sample, in generation order (`A, B, F_2, …, F_{n+1}` in the forward
        order), sits in time from A: its serial number minus one, `[0, n + 1, 1, …, n]` in the forward order.
        [`reorder_interpolated`] sorts by it, and the pipeline places (and reports) each inserted frame of pair p
        at `p * (n + 1) + offset`.

        Example:

        ```python
        >>> processor.interpolation_time_offsets(3)
        [0, 4, 1, 2, 3]
        ```
        """
        return [serial_number - 1 for serial_number in self.interpolation_serial_numbers(num_inserted, order)]

    def reorder_interpolated(self, frames_in_generation_order: Any, num_inserted: int, order: str = "forward") -> Any:
        """
        Reorder the frames of an interpolation sample from generation order (`A, B, F_2, …, F_{n+1}` in the
        forward order) to time order `A, F_2, …, F_{n+1}, B` (by [`interpolation_time_offsets`]).

        `frames_in_generation_order` is indexed along its first axis: a list, a tensor or an array of n + 2
        frames (codes or pixels). The result has the same type.
        """
        offsets = self.interpolation_time_offsets(num_inserted, order)
        if len(frames_in_generation_order) != len(offsets):
            raise ValueError(
                f"frames_in_generation_order must hold num_inserted + 2 = {len(offsets)} frames, got "
                f"{len(frames_in_generation_order)}."
            )
        order = sorted(range(len(offsets)), key=offsets.__getitem__)
        if isinstance(frames_in_generation_order, torch.Tensor):
            index = torch.tensor(order, device=frames_in_generation_order.device)
            return frames_in_generation_order.index_select(0, index)
        if isinstance(frames_in_generation_order, np.ndarray):
            return frames_in_generation_order[order]
        return type(frames_in_generation_order)(frames_in_generation_order[i] for i in order)


class FlashVideoProcessor(ProcessorMixin, SequenceBuilderMixin):
    """
    Turns captions into FlashVideo token ids and lays out key-frame and interpolation sequences: the caption
    tokenizer (a 🤗 `PreTrainedTokenizerFast`, ids offset by `text_token_start` into the model vocabulary) and the
    [`SequenceLayout`] of the model config. It holds no weights: frames become codes through the image tokenizer
    (`flashvideo.image_tokenizer`, the pipeline's `vqvae`), a component of its own.

    A transformers `ProcessorMixin`: `AutoProcessor.from_pretrained(checkpoint)` loads it, and `save_pretrained`
    writes `processor_config.json` (the layout) and `text_tokenizer/`, the layout every FlashVideo checkpoint has.

    Args:
        text_tokenizer: caption tokenizer; its size must fit `config.text_vocab_size`.
        config: a [`FlashVideoConfig`] or a [`SequenceLayout`].

    Example:

    ```python
    >>> from flashvideo import FlashVideoConfig
    >>> from flashvideo.processing_flashvideo import FlashVideoProcessor
    >>> from flashvideo.text_tokenizer import build_text_tokenizer
    >>> config = FlashVideoConfig()
    >>> processor = FlashVideoProcessor(build_text_tokenizer(["a red circle moving left"], vocab_size=1024), config)
    >>> prefix = processor.keyframe_prefix("a red circle moving left", 1)  # [text][SN_1]
    >>> processor.save_pretrained("checkpoint")
    >>> processor = FlashVideoProcessor.from_pretrained("checkpoint")
    ```
    """

    def __init__(self, text_tokenizer: PreTrainedTokenizerFast, config: FlashVideoConfig | SequenceLayout) -> None:
        layout = config if isinstance(config, SequenceLayout) else SequenceLayout.from_config(config)
        if len(text_tokenizer) > layout.text_vocab_size:
            raise ValueError(
                f"The text tokenizer has {len(text_tokenizer)} tokens, more than config.text_vocab_size "
                f"({layout.text_vocab_size}); raise text_vocab_size or build a smaller tokenizer."
            )
        super().__init__(text_tokenizer=text_tokenizer)
        self.layout = layout

    @classmethod
    def from_config_values(cls, text_tokenizer: PreTrainedTokenizerFast, **config_values: Any) -> FlashVideoProcessor:
        """
        Build a processor from layout values instead of a config object; `config_values` are
        [`FlashVideoConfig`] keyword arguments (e.g. `text_vocab_size=64, image_size=32, code_grid_size=8`),
        and the ranges left unspecified are placed as the config places them.
        """
        return cls(text_tokenizer, FlashVideoConfig(**config_values))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(text_tokenizer={len(self.text_tokenizer)} tokens, layout={self.layout})"

    def __call__(self, text: str | Sequence[str], frame_number: int = 1, **kwargs: Any) -> BatchEncoding:
        """The key-frame prefixes `[text][SN_frame_number]` of one caption or a list of them, as `input_ids`
        (lists of model-vocabulary ids), what the model is fed before it samples that frame."""
        if kwargs:
            logger.warning(f"FlashVideoProcessor.__call__ ignores the arguments {sorted(kwargs)}.")
        texts = [text] if isinstance(text, str) else list(text)
        return BatchEncoding({"input_ids": [self.keyframe_prefix(caption, frame_number) for caption in texts]})

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

    # ----------------------------------------------------------------- identity, saving and loading

    def fingerprint(self) -> str:
        """
        A hex digest that changes whenever the layout or the text tokenizer changes; 🤗 Datasets caches of
        tokenized data are keyed on it (with the image tokenizer's own, `image_tokenizer_fingerprint`).
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self.layout.to_dict(), sort_keys=True).encode())
        tokenizer = json.loads(self.text_tokenizer.backend_tokenizer.to_str())
        # Padding/truncation settings change with use (a `truncation=True` call stores them), not the ids.
        tokenizer.pop("padding", None)
        tokenizer.pop("truncation", None)
        digest.update(json.dumps(tokenizer, sort_keys=True).encode())
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """What `processor_config.json` holds: the class, the layout and where the caption tokenizer is."""
        return {
            "processor_class": type(self).__name__,
            "text_tokenizer_subfolder": TEXT_TOKENIZER_SUBFOLDER,
            "layout": self.layout.to_dict(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """
        Save to `save_directory`: `processor_config.json` (the layout) and `text_tokenizer/` (the caption tokenizer:
        `tokenizer.json`, `tokenizer_config.json`), as `ProcessorMixin` saves a processor with a tokenizer named
        `text_tokenizer`. `push_to_hub(repo_id)` saves this way into a temporary folder and uploads it.
        """
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_directory ({save_directory}) must be a directory, not a file.")
        files = super().save_pretrained(save_directory, **kwargs)
        logger.info(f"FlashVideo processor saved in {save_directory}")
        return files

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any
    ) -> FlashVideoProcessor:
        """
        Load a processor saved with [`save_pretrained`] from a local directory or a Hub repo id. Checkpoints written
        before the image tokenizer left the processor load as they are (their `image_tokenizer_subfolder` entry
        is for the pipeline's `vqvae`; the processor does not read it).

        Args:
            pretrained_model_name_or_path: a local directory, or a Hub repo id (fetched with
                `huggingface_hub.snapshot_download`, which works offline from the cache with
                `HF_HUB_OFFLINE=1`).
            subfolder: where inside the directory or repo the processor files are.
            hub_kwargs: passed to `snapshot_download` (`revision`, `cache_dir`, `token`, `local_files_only`,
                …).
        """
        # What `AutoProcessor` and `pipeline()` add for transformers' own loaders, not for the Hub client.
        for key in ("_from_auto", "_from_pipeline", "trust_remote_code", "code_revision", "_commit_hash", "dtype"):
            hub_kwargs.pop(key, None)
        path = Path(pretrained_model_name_or_path)
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            check_local_or_repo_id(pretrained_model_name_or_path, "pretrained_model_name_or_path")
            allow = [f"{prefix}{PROCESSOR_CONFIG_NAME}", f"{prefix}{TEXT_TOKENIZER_SUBFOLDER}/*"]
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
        processor_config = read_json(config_file)
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
        key = "text_tokenizer_subfolder"
        text_folder = inside_checkpoint(path, processor_config.get(key, TEXT_TOKENIZER_SUBFOLDER), key, config_file)
        text_tokenizer = load_component(
            PreTrainedTokenizerFast, text_folder, required=("tokenizer.json",), optional=("tokenizer_config.json",)
        )
        return cls(text_tokenizer, layout)


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


__all__ = ["IGNORE_INDEX", "FlashVideoProcessor", "SequenceBuilderMixin", "SequenceLayout"]
