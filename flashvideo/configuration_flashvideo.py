"""FlashVideo model configuration."""

import math
import numbers
from typing import Any

import torch

from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


class VocabularyLayout:
    """The id ranges of the shared vocabulary, derived from the `*_start` / `*_size` fields of the class using it.

    Shared by `FlashVideoConfig` and the processor's `SequenceLayout`, so the layout arithmetic lives in one place.
    The class using it provides `serial_token_start`, `max_frames`, `text_token_start`, `text_vocab_size`,
    `image_token_start`, `image_vocab_size` and `code_grid_size`.
    """

    @property
    def tokens_per_frame(self) -> int:
        return self.code_grid_size * self.code_grid_size

    @property
    def serial_token_range(self) -> tuple[int, int]:
        return (self.serial_token_start, self.serial_token_start + self.max_frames)

    @property
    def text_token_range(self) -> tuple[int, int]:
        return (self.text_token_start, self.text_token_start + self.text_vocab_size)

    @property
    def image_token_range(self) -> tuple[int, int]:
        """Half-open range `[start, end)` of the image-code ids."""
        return (self.image_token_start, self.image_token_start + self.image_vocab_size)

    def serial_token_id(self, frame_number: int) -> int:
        """Id of `<SN_frame_number>`; frame numbers are 1-based as in the paper."""
        if isinstance(frame_number, bool) or not isinstance(frame_number, numbers.Integral):
            raise ValueError(
                f"frame_number must be an integer in [1, {self.max_frames}], got {frame_number!r}."
            )
        if not 1 <= frame_number <= self.max_frames:
            raise ValueError(
                f"frame_number must be in [1, {self.max_frames}] (max_frames), got {frame_number}."
            )
        return self.serial_token_start + int(frame_number) - 1


# The orders in which an interpolation sample's inserted frames F_2 … F_{n+1} follow A and B (serial numbers say which
# frame each one is, so the paper's layout allows any): "forward", the paper's F_2, F_3, …, F_{n+1}; "outside_in",
# F_2, F_{n+1}, F_3, F_n, …, alternately the earliest and the latest frame still missing, so that each inserted
# frame is generated right beside a frame already known (A, B or one generated before it).
INTERPOLATION_ORDERS = ("forward", "outside_in")


def is_decay_exponent(value: object) -> bool:
    """Whether `value` can be a retention decay exponent e_h (γ_h = 1 − 2^(−e_h)): a number in (0, 52]; beyond 52,
    γ_h rounds to 1 even in float64."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value <= 52


class FlashVideoConfig(PreTrainedConfig, VocabularyLayout):
    r"""
    Configuration of a FlashVideo (RetNet) text-to-video model.

    Besides the usual decoder sizes it records the layout of the single shared vocabulary, so that no code
    hard-codes token offsets::

        [pad, bos, eos] [<SN_1> … <SN_max_frames>] [text tokens] [image codes]

    Each range start left as `None` is placed right after the previous range, and `vocab_size=None` ends the
    vocabulary at the last range. Serial number `i` (1-based) is token `serial_token_start + i - 1`.

    Args:
        hidden_size: model width d.
        num_hidden_layers: number of RetNet blocks.
        num_attention_heads: retention heads H; must divide `hidden_size`.
        intermediate_size: width of the GLU feed-forward layer.
        value_dim: total value width H·d_v of multi-scale retention (default `2 * hidden_size`, as in RetNet).
        decay_exponents: per-head e_h of the retention decay γ_h = 1 − 2^(−e_h), one per head. `None` (default):
            RetNet's e_h = 5 + h. With few heads that default forgets quickly: for H = 4 the slowest head's
            γ_h^n falls to 1/e after 256 positions, about one 64×64 frame of 16×16 codes, so a small model
            barely sees the frames before the previous one. Larger exponents let it look further back.
        code_position_embeddings: add a learned embedding of each token's place in its frame to the token
            embeddings: how many image codes of the current frame (the tokens after the latest serial number)
            precede the next token, 0 … code_grid_size², i.e. which cell of the code grid the token predicts.
            Retention's decay and rotation only say how far apart two tokens are, so without it the model learns
            the grid column by counting back from the serial number. The table starts at zero, so switching it
            on for a trained model leaves its outputs unchanged until it is fine-tuned.
        interpolation_order: the order of the inserted frames in the interpolation samples the model was trained
            on, and so the order the pipeline generates them in (`INTERPOLATION_ORDERS`): "forward" (default, the
            paper's F_2, F_3, …, F_{n+1}) or "outside_in" (F_2, F_{n+1}, F_3, F_n, …). Only an interpolation model
            reads it.
        rms_norm_eps: epsilon of the RMSNorms (also the per-head retention norm).
        chunk_size: block length of the chunkwise form (training and long prefills).
        text_vocab_size / image_vocab_size: sizes of the text-token and image-code ranges.
        max_frames: number of serial-number tokens, i.e. the most frames one sequence can hold.
        image_size: frame side in pixels; code_grid_size: side of an encoded frame's code grid.

    Example:

    ```python
    >>> from flashvideo import FlashVideoConfig, FlashVideoForCausalLM
    >>> config = FlashVideoConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4)
    >>> config.image_token_range
    (1059, 1571)
    >>> model = FlashVideoForCausalLM(config)
    ```
    """

    model_type = "flashvideo"
    keys_to_ignore_at_inference = ["cache"]

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    value_dim: int | None = None
    decay_exponents: list[float] | None = None
    code_position_embeddings: bool = False
    interpolation_order: str = "forward"
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    chunk_size: int = 256
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False

    # Vocabulary layout (DESIGN §2).
    vocab_size: int | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    serial_token_start: int | None = None
    max_frames: int = 32
    text_token_start: int | None = None
    text_vocab_size: int = 1024
    image_token_start: int | None = None
    image_vocab_size: int = 512

    # Frame geometry.
    image_size: int = 64
    code_grid_size: int = 16

    def __post_init__(self, **kwargs):
        self._check_types(kwargs)
        if self.value_dim is None:
            self.value_dim = 2 * self.hidden_size
        special_ids = [i for i in (self.pad_token_id, self.bos_token_id, self.eos_token_id) if i is not None]
        next_free = max(special_ids, default=-1) + 1
        if self.serial_token_start is None:
            self.serial_token_start = next_free
        if self.text_token_start is None:
            self.text_token_start = self.serial_token_start + self.max_frames
        if self.image_token_start is None:
            self.image_token_start = self.text_token_start + self.text_vocab_size
        if self.vocab_size is None:
            self.vocab_size = max(
                self.serial_token_start + self.max_frames,
                self.text_token_start + self.text_vocab_size,
                self.image_token_start + self.image_vocab_size,
            )
        self._check_values()
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "FlashVideoConfig":
        """As `PreTrainedConfig.from_dict`, but a config of another `model_type` is refused (ValueError) instead of
        loaded with a warning: its fields would be read as FlashVideo's."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"This config has model_type {model_type!r}, not {cls.model_type!r}: it is not a FlashVideo "
                "checkpoint."
            )
        return super().from_dict(config_dict, **kwargs)

    def _check_types(self, kwargs: dict[str, Any]) -> None:
        """ValueErrors (not TypeErrors or AttributeErrors later) for fields of the wrong type, before any
        arithmetic on them."""
        integers = (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "value_dim", "chunk_size",
            "max_frames", "text_vocab_size", "image_vocab_size", "image_size", "code_grid_size", "vocab_size",
            "pad_token_id", "bos_token_id", "eos_token_id", "serial_token_start", "text_token_start",
            "image_token_start",
        )  # fmt: skip
        for name in integers:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"FlashVideoConfig.{name} must be a non-negative integer, got {value!r}.")
        for name, strict in (("rms_norm_eps", True), ("initializer_range", False)):
            value = getattr(self, name)
            if (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not (value > 0 if strict else value >= 0)
            ):  # fmt: skip
                raise ValueError(
                    f"FlashVideoConfig.{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}."
                )
        for name in ("code_position_embeddings", "use_cache", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"FlashVideoConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(
                f"FlashVideoConfig.hidden_act must name one of transformers' activations (ACT2FN: "
                f"{', '.join(sorted(ACT2FN))}); RetNet's GLU uses 'silu'. Got {self.hidden_act!r}."
            )
        for name, dtype in (("dtype", getattr(self, "dtype", None)), ("torch_dtype", kwargs.get("torch_dtype"))):
            if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
                continue
            if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(
                    f"FlashVideoConfig.{name} must be a torch dtype or its name (e.g. 'float32', 'float16', "
                    f"'bfloat16'), got {dtype!r}."
                )

    def _check_values(self) -> None:
        positive = (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "value_dim",
            "chunk_size", "max_frames", "text_vocab_size", "image_vocab_size", "image_size", "code_grid_size",
            "vocab_size",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FlashVideoConfig.{name} must be a positive integer, got {value!r}.")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"FlashVideoConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"FlashVideoConfig.num_attention_heads ({self.num_attention_heads}) must divide hidden_size "
                f"({self.hidden_size})."
            )
        if self.value_dim % self.num_attention_heads:
            raise ValueError(
                f"FlashVideoConfig.num_attention_heads ({self.num_attention_heads}) must divide value_dim "
                f"({self.value_dim})."
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                "FlashVideoConfig.hidden_size / num_attention_heads (the key dimension per head) must be even for "
                f"the rotation; got {self.hidden_size // self.num_attention_heads}."
            )
        if not isinstance(self.code_position_embeddings, bool):
            raise ValueError(
                "FlashVideoConfig.code_position_embeddings must be True or False, got "
                f"{self.code_position_embeddings!r}."
            )
        if self.interpolation_order not in INTERPOLATION_ORDERS:
            raise ValueError(
                f"FlashVideoConfig.interpolation_order must be one of {list(INTERPOLATION_ORDERS)}, got "
                f"{self.interpolation_order!r}."
            )
        exponents = self.decay_exponents
        if exponents is not None and (
            not isinstance(exponents, (list, tuple))
            or len(exponents) != self.num_attention_heads
            or not all(map(is_decay_exponent, exponents))
        ):
            raise ValueError(
                f"FlashVideoConfig.decay_exponents must be None or a list of num_attention_heads "
                f"({self.num_attention_heads}) numbers in (0, 52] (γ_h = 1 − 2^(−e_h)), got {exponents!r}."
            )
        if self.image_size % self.code_grid_size:
            raise ValueError(
                f"FlashVideoConfig.code_grid_size ({self.code_grid_size}) must divide image_size ({self.image_size})."
            )
        ranges = {
            "serial_token_start": (self.serial_token_start, self.serial_token_start + self.max_frames),
            "text_token_start": (self.text_token_start, self.text_token_start + self.text_vocab_size),
            "image_token_start": (self.image_token_start, self.image_token_start + self.image_vocab_size),
        }
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            token_id = getattr(self, name)
            if token_id is not None:
                ranges[name] = (token_id, token_id + 1)
        for name, (start, end) in ranges.items():
            if start < 0 or end > self.vocab_size:
                raise ValueError(
                    f"FlashVideoConfig.{name} gives ids [{start}, {end}) outside the vocabulary [0, vocab_size) = "
                    f"[0, {self.vocab_size}); raise vocab_size or move the range."
                )
        ordered = sorted(ranges.items(), key=lambda item: item[1])
        for (name_a, (start_a, end_a)), (name_b, (start_b, _)) in zip(ordered, ordered[1:]):
            if start_b < end_a:
                raise ValueError(
                    f"FlashVideoConfig.{name_b} (ids from {start_b}) overlaps {name_a} (ids [{start_a}, {end_a}))."
                )

    @property
    def head_dim(self) -> int:
        """Key/query dimension per head, d_k = d / H."""
        return self.hidden_size // self.num_attention_heads

    @property
    def value_head_dim(self) -> int:
        """Value dimension per head, d_v."""
        return self.value_dim // self.num_attention_heads


__all__ = ["FlashVideoConfig", "VocabularyLayout"]
