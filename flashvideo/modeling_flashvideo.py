"""FlashVideo: a RetNet decoder for text-to-video token sequences (Lei et al., FlashVideo §3.1).

Architecture (RetNet as in torchscale 0.3.0, with RMSNorm and a GLU feed-forward):

    x = x + MSR(RMSNorm(x));  x = x + GLU(RMSNorm(x));  …;  logits = lm_head(RMSNorm(x))

The retention math lives in `retention.py`; this file holds the layers, the `RetNetCache` that carries the
recurrent state through `generate()`, and the 🤗 model classes.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Concatenate, ConversionOps, WeightConverter, WeightRenaming
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

from .ahead_of_time import AheadOfTimeStep
from .configuration_flashvideo import FlashVideoConfig
from .fused_layers import FusedDecoder, forward_replaced, fused_decoder_layers
# transformers' GenerationMixin and output classes, with 5.24's `cache` naming also on 5.23.
from .transformers_compat import BaseModelOutputWithPast, CausalLMOutputWithPast, GenerationMixin
from .retention import (
    ParallelDecay,
    chunkwise_retention,
    parallel_decay,
    parallel_retention,
    recurrent_retention,
    retention_log_decay,
    retention_prefix_decays,
    retention_states_at,
    rotate_pairs,
    rotation_angles,
    rotation_phasors,
)


logger = logging.get_logger(__name__)

ForwardMode = Literal["auto", "parallel", "chunkwise", "recurrent"]
FORWARD_MODES = ("auto", "parallel", "chunkwise", "recurrent")
# Graphs torch.compile may keep for the compiled step (`FlashVideoModel.compile_recurrent_step`), over every model.
COMPILED_GRAPHS_PER_FUNCTION = 64


def places_column(places: torch.Tensor, index: int) -> torch.Tensor:
    """`places[:, index]` (`[batch]`), with stride 1: as a view of a call's `[batch, length]` places its stride would be
    the call's length, and a compiled step, which guards on its inputs' strides, would compile once per length."""
    column = places[:, index]
    return column if column.stride(0) == 1 else column.clone(memory_format=torch.contiguous_format)


@dataclass
class RetNetCallRecord:
    """What rolling the cache back into one model call needs: the states before it and the call's own keys and
    values (after rotation, scaling and padding), per layer, plus where every row stood before it."""

    seen_tokens: int  # tokens counted before the call
    length: int
    states: list[torch.Tensor | None]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    log_decay: torch.Tensor
    row_positions: torch.Tensor | None  # [batch] positions before the call (None: every row at `seen_tokens`)
    frame_places: torch.Tensor | None  # [batch] places before the call
    places: torch.Tensor | None  # [batch, length] places of the call's tokens
    # [length + 1, heads, length + 1] `retention_prefix_decays` of the call's length, when the model keeps them for
    # short calls (None: computed when needed).
    prefix_decays: torch.Tensor | None = None


class RetNetCache(Cache):
    """Recurrent state of every retention layer, for O(1)-per-token decoding with `generate()`.

    Unlike a key/value cache it holds one `[batch, heads, d_k, d_v]` state per layer whatever the sequence
    length, plus a token counter (positions of new tokens come from `get_seq_length()`) and, for models with code
    position embeddings, each row's place in its current frame. States are kept in float32 (or float64) even for
    half-precision models.

    It can also roll back: it keeps, for its last calls (at least the last one, and as many before it as fit in
    `max_rollback_tokens`), the states before each call and the call's keys and values, and rebuilds the exact state
    at any position inside them (S_a = γ^a S_0 + Σ_{m<a} γ^(a−1−m) k_mᵀ v_m per head, see
    `retention.retention_state_at`). `crop(-n)` removes the last n tokens, as transformers' assisted decoding asks;
    `rewind(kept)` keeps the first `kept[b]` tokens of the last call per row, after which rows stand at different
    positions (`row_positions`), which the model then follows. A multi-token call in the parallel form (a speculative
    verify call) leaves its final states to the cache: `rewind` computes the states at the kept prefix straight from
    the record, and anything that reads the states (`states`, `get_state`, the next call…) computes the full-length
    ones on first read, exactly as the call would have.

    Example:

    ```python
    >>> cache = RetNetCache(num_layers=model.config.num_hidden_layers)
    >>> out = model(prompt_ids, cache=cache, use_cache=True)     # parallel/chunkwise prefill
    >>> out = model(next_token_ids, cache=cache, use_cache=True)  # one recurrent step
    >>> cache.get_seq_length(), cache.nbytes
    >>> out = model(draft_ids, cache=cache, use_cache=True)       # 8 drafts verified in one call
    >>> cache.crop(-5)                                            # only the first 3 were accepted
    ```
    """

    is_compileable = False

    def __init__(self, num_layers: int, max_rollback_tokens: int = 64):
        # The base class manages key/value layers; ours are plain state tensors, so it gets an empty list.
        super().__init__(layers=[])
        if max_rollback_tokens < 0:
            raise ValueError(f"max_rollback_tokens must be >= 0, got {max_rollback_tokens}.")
        self.num_layers = num_layers
        self.max_rollback_tokens = max_rollback_tokens
        self._states: list[torch.Tensor | None] = [None] * num_layers
        # The last call when its final states were not computed (a multi-token parallel-form call: the sampler's
        # verify calls, after which `rewind` usually computes the states at the kept prefix instead); reading
        # `states` computes them from this record. None: `_states` holds the states.
        self._deferred: RetNetCallRecord | None = None
        # [batch] place of the last token in its frame (see FlashVideoCodePositions); None without code positions.
        self.frame_places: torch.Tensor | None = None
        # [batch] position of each row's next token once rows have advanced by different amounts; None: all at
        # `get_seq_length()`.
        self.row_positions: torch.Tensor | None = None
        self.records: list[RetNetCallRecord] = []
        self._seen_tokens = 0

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return f"RetNetCache(num_layers={self.num_layers}, seen_tokens={self._seen_tokens}, batch_size={self.batch_size})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no limit: the state does not grow

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None) -> bool:
        return self._seen_tokens > 0

    @property
    def states(self) -> list[torch.Tensor | None]:
        """Each layer's state `[batch, heads, d_k, d_v]` (None before the first call); after a multi-token call whose
        final states were deferred, computed here from the call's record on first read."""
        if self._deferred is not None:
            record = self._deferred
            self._states = retention_states_at(
                record.keys, record.values, record.log_decay, record.length, record.states, record.prefix_decays
            )
            self._deferred = None
        return self._states

    @states.setter
    def states(self, states: list[torch.Tensor | None]) -> None:
        self._states = states
        self._deferred = None

    @property
    def batch_size(self) -> int:
        if self._deferred is not None and self._deferred.keys:  # known without computing the deferred states
            return self._deferred.keys[0].shape[0]
        return next((state.shape[0] for state in self._states if state is not None), -1)

    @property
    def is_initialized(self) -> bool:
        return self._deferred is not None or all(state is not None for state in self._states)

    @property
    def is_croppable(self) -> bool:
        # Within the recorded calls; `crop` says so when asked for more.
        return True

    @property
    def rollback_tokens(self) -> int:
        """How many of the last tokens `crop` can remove."""
        # The records are contiguous (each call starts where the one before it ends), so this needs no sum.
        return self._seen_tokens - self.records[0].seen_tokens if self.records else 0

    @property
    def is_linear(self) -> list[bool]:
        # Retention *is* linear attention, and transformers' `is_linear` means "a linear-attention (Mamba/SSM) state
        # layer". But generate() also reads `all(cache.is_linear)` as "no sequence length to go by": it then skips
        # slicing off the tokens the cache has already seen when generation continues from a returned cache (and
        # offloaded caches skip such layers). RetNetCache does count its tokens (`get_seq_length()`, from which the
        # positions of new tokens come) and needs that slicing, so it answers False, like a key/value cache.
        return [False] * self.num_layers

    @property
    def nbytes(self) -> int:
        """Memory held by the states, in bytes; independent of how many tokens were processed."""
        return sum(state.numel() * state.element_size() for state in self.states if state is not None)

    def get_state(self, layer_idx: int) -> torch.Tensor | None:
        return self.states[layer_idx]

    def set_state(self, layer_idx: int, state: torch.Tensor) -> None:
        self.states[layer_idx] = state

    def positions(self, length: int, device: torch.device) -> torch.Tensor:
        """Positions of the next `length` tokens: `[length]`, or `[batch, length]` when rows stand apart."""
        offsets = torch.arange(length, device=device)
        if self.row_positions is None:
            return offsets + self._seen_tokens
        return self.row_positions[:, None] + offsets

    def update(
        self,
        states: list[torch.Tensor] | None,
        keys_and_values: list[tuple[torch.Tensor, torch.Tensor]],
        log_decay: torch.Tensor,
        places: torch.Tensor | None,
        length: int,
        prefix_decays: torch.Tensor | None = None,
    ) -> None:
        """Take the states after a call of `length` tokens, and record what rolling back into it needs.

        `states` None: the call did not compute its final states; they are computed from its record when first
        read (`states`), or at the kept prefix by `rewind`, which then never needs the full-length ones.
        `prefix_decays`: `retention.retention_prefix_decays(log_decay, length)`, when the model keeps it (each
        rewind or deferred read is then one lookup of decay factors instead of a dozen operators).

        Example:

        ```python
        >>> cache.update(None, keys_and_values, log_decay, places, length=5)  # deferred final states
        >>> cache.rewind([2, 5, 3])  # the states after 2, 5 and 3 tokens, straight from the record
        ```
        """
        record = RetNetCallRecord(
            seen_tokens=self._seen_tokens, length=length, states=self.states,
            keys=[kv[0] for kv in keys_and_values], values=[kv[1] for kv in keys_and_values],
            log_decay=log_decay, row_positions=self.row_positions, frame_places=self.frame_places, places=places,
            prefix_decays=prefix_decays,
        )  # fmt: skip
        self.records.append(record)
        if states is None:
            self._states, self._deferred = [None] * self.num_layers, record
        else:
            self.states = list(states)
        if places is not None:
            self.frame_places = places_column(places, -1)
        if self.row_positions is not None:
            self.row_positions = self.row_positions + length
        self._seen_tokens += length
        while len(self.records) > 1 and self.rollback_tokens > self.max_rollback_tokens:
            self.records.pop(0)

    def activate_past_recording(self) -> None:
        """Called by assisted decoding before it starts; the calls are always recorded (see `max_rollback_tokens`)."""

    def rewind(self, kept: int | Sequence[int] | torch.Tensor) -> None:
        """Keep only the first `kept` tokens of the last call, as if the rest had never been fed: an int for every
        row, or one count per row (a list of ints or a `[batch]` integer tensor), after which rows whose counts
        differ stand at different positions (`row_positions`). The state is rebuilt exactly from the call's keys
        and values.

        A list costs least: its counts are checked on the host as they are, where a tensor's must be read back
        (one device sync).

        Example:

        ```python
        >>> model(draft_ids, cache=cache, use_cache=True)  # 5 tokens per row
        >>> cache.rewind([3, 5, 1])  # row 0 keeps 3 of them, row 1 all 5, row 2 one
        ```
        """
        if not self.records:
            raise ValueError("rewind needs a recorded call: the cache has seen no call it can roll back into.")
        record = self.records[-1]
        kept_rows = None
        if isinstance(kept, int):
            if not 0 <= kept <= record.length:
                raise ValueError(f"kept must be in [0, {record.length}] (the last call's length), got {kept}.")
        else:
            if isinstance(kept, torch.Tensor):
                kept_rows, counts = kept, kept.tolist()  # the one host read, for the checks below
            else:
                counts = list(kept)
            batch = self.batch_size
            try:
                valid = len(counts) == batch and all(0 <= count <= record.length for count in counts)
            except TypeError:  # not one number per row (a 0-d or 2-d tensor, say)
                valid = False
            if not valid:
                raise ValueError(
                    f"kept must hold one count per row ({batch}) in [0, {record.length}] (the last call's length), "
                    f"got {counts}."
                )
            if min(counts) == max(counts):  # every row keeps the same: positions stay uniform
                kept, kept_rows = int(counts[0]), None
            else:
                device = record.keys[0].device if record.keys else None
                if kept_rows is None:
                    kept_rows = torch.tensor(counts, dtype=torch.long, device=device)
                else:
                    kept_rows = kept_rows.to(device=device, dtype=torch.long)
        lengths = kept if kept_rows is None else kept_rows
        self.states = retention_states_at(
            record.keys, record.values, record.log_decay, lengths, record.states, record.prefix_decays
        )
        if record.places is not None:
            if kept_rows is not None:
                last = record.places.gather(1, (kept_rows - 1).clamp(min=0)[:, None])[:, 0]
                before = record.frame_places if record.frame_places is not None else torch.full_like(last, -1)
                self.frame_places = torch.where(kept_rows > 0, last, before)
            elif kept > 0:
                self.frame_places = places_column(record.places, kept - 1)
            else:
                before = record.frame_places
                if before is None:
                    before = torch.full_like(places_column(record.places, 0), -1)
                self.frame_places = before
        if kept_rows is None:
            self._seen_tokens = record.seen_tokens + kept
            self.row_positions = None if record.row_positions is None else record.row_positions + kept
            # What is left of the call stays recorded, so that a later rewind or crop can go further back inside it.
            record.length = kept
        else:  # rows now stand apart; the token counter counts the call's slots
            self._seen_tokens = record.seen_tokens + record.length
            before = record.row_positions if record.row_positions is not None else record.seen_tokens
            self.row_positions = before + kept_rows

    def check_batch_size(self, batch_size: int) -> None:
        if self.batch_size not in (-1, batch_size):
            raise ValueError(
                f"cache holds a RetNetCache for batch size {self.batch_size}, but the inputs have batch "
                f"size {batch_size}; pass the cache returned for this batch or a new RetNetCache."
            )

    def _map_states(self, fn) -> None:
        """Apply a per-row operation (reorder, repeat, select) to everything the cache holds per batch row."""
        self.states = [None if state is None else fn(state) for state in self.states]
        if self.frame_places is not None:
            self.frame_places = fn(self.frame_places)
        if self.row_positions is not None:
            self.row_positions = fn(self.row_positions)
        self.records = []  # no rollback across a change of rows

    def reset(self) -> None:
        self.states = [None] * self.num_layers
        self.frame_places = None
        self.row_positions = None
        self.records = []
        self._seen_tokens = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_states(lambda state: state.index_select(0, beam_idx.to(state.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_states(lambda state: state.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_states(lambda state: state[indices])

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last `-tokens_to_remove` tokens (transformers ≥ 5.24 passes a negative count; a positive value
        is the length to keep, as transformers before 5.24 passed it; 0 removes nothing).

        Possible within the recorded calls (`rollback_tokens`); beyond, a ValueError says how far it can go.
        """
        target = self._seen_tokens + tokens_to_remove if tokens_to_remove <= 0 else tokens_to_remove
        if target == self._seen_tokens:
            return
        if self.row_positions is not None:
            raise ValueError("crop needs every row at the same position; after a per-row rewind use rewind().")
        oldest = self._seen_tokens - self.rollback_tokens
        if not oldest <= target <= self._seen_tokens:
            raise ValueError(
                f"RetNetCache can roll back over its last {self.rollback_tokens} tokens (to a length in [{oldest}, "
                f"{self._seen_tokens}]), asked for crop({tokens_to_remove}) with {self._seen_tokens} tokens seen. "
                "Raise max_rollback_tokens to keep more calls."
            )
        while self.records[-1].seen_tokens > target:
            record = self.records.pop()
            self.states, self.frame_places = record.states, record.frame_places
            self._seen_tokens = record.seen_tokens
        if target < self._seen_tokens:
            self.rewind(target - self.records[-1].seen_tokens)


class FlashVideoRMSNorm(nn.Module):
    """RMSNorm over the last dimension, with a learned scale (the per-head norm has none and is a function call)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        # Normalise in at least float32; the casts are skipped in the common float32 case (the decode hot path).
        if input_dtype in (torch.float16, torch.bfloat16):
            weight = self.weight.float()
            return nn.functional.rms_norm(hidden_states.float(), weight.shape, weight, self.eps).to(input_dtype)
        # One operator instead of five (measured faster per decode step than pow/mean/add/rsqrt/mul).
        return nn.functional.rms_norm(hidden_states, hidden_states.shape[-1:], self.weight, self.eps)


class RetentionPositions(NamedTuple):
    """What every retention layer needs to know about the positions of one call; computed once per call."""

    # complex `[length, 2, 1, d_k/2]` (`[batch, length, 2, 1, d_k/2]` for per-row positions): e^(i·nθ) for the
    # queries (index 0) and d_k^−0.5·e^(i·nθ) for the keys (index 1), so that one multiplication rotates both and
    # scales the keys (see `retention.rotate_pairs`).
    rotation: torch.Tensor
    log_decay: torch.Tensor  # `[heads]` log γ_h, in the compute dtype
    decay: torch.Tensor  # `[heads, 1, 1]` γ_h, for the recurrent step
    # The parallel form's decay factors for the call's block length (parallel and chunkwise forms), else None.
    parallel_decay: ParallelDecay | None = None


class FlashVideoRetentionPositions(nn.Module):
    """Per-head decay γ_h and the rotation e^(i·nθ) for given positions, computed once per forward.

    log γ, θ and the phasors' moduli (1 for queries, d_k^−0.5 for keys) are non-persistent buffers (derived from
    the config, not learned), recomputed in `_init_weights`.
    """

    MAX_KEPT_BLOCK_LENGTH = 64  # parallel-form decay factors kept for block lengths up to this (at most 64 of them)

    def __init__(self, config: FlashVideoConfig):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.decay_exponents = config.decay_exponents
        log_decay, angles, rotation_scales = self.exact_constants()
        self.log_decay = nn.Buffer(log_decay, persistent=False)
        self.angles = nn.Buffer(angles, persistent=False)
        self.rotation_scales = nn.Buffer(rotation_scales, persistent=False)
        self._kept_parallel_decays: dict[tuple[int, torch.dtype, torch.device], ParallelDecay] = {}
        self._kept_prefix_decays: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def exact_constants(
        self, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log γ_h, θ and `[2, 1, 1]` moduli (query, key) computed afresh from the config (in float64, then cast
        to `dtype`)."""
        scales = torch.tensor([1.0, self.head_dim**-0.5], dtype=torch.float64)[:, None, None]
        return (
            retention_log_decay(self.num_heads, self.decay_exponents).to(device, dtype),
            rotation_angles(self.head_dim).to(device, dtype),
            scales.to(device, dtype),
        )

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._kept_parallel_decays, self._kept_prefix_decays = {}, {}
        # `.half()` would round γ_h = 1 − 2^(−e_h) enough to change the decay over thousands of positions: after a
        # cast, both constants are recomputed in at least float32 (`.double()` makes them exact).
        if self.log_decay.dtype != torch.float32:
            dtype = torch.promote_types(self.log_decay.dtype, torch.float32)
            self.log_decay, self.angles, self.rotation_scales = self.exact_constants(self.log_decay.device, dtype)
        return self

    def forward(
        self, positions: torch.Tensor, compute_dtype: torch.dtype, block_length: int | None = None
    ) -> RetentionPositions:
        """`positions`: `[length]`, or `[batch, length]` when rows stand at different positions; `block_length`: the
        length of the parallel form's blocks, whose decay factors are then computed here, once for every layer."""
        # Buffers and integer positions: nothing here requires grad, so no autograd graph is built (and no no_grad
        # context is needed on the decode path). θ is every other angle (they come in equal pairs).
        angles, log_decay, scales = self.angles[::2], self.log_decay, self.rotation_scales
        if angles.dtype != compute_dtype:
            angles, log_decay, scales = (x.to(compute_dtype) for x in (angles, log_decay, scales))
        rotation = rotation_phasors(positions, angles, scales)
        return RetentionPositions(
            rotation, log_decay, log_decay.exp().view(-1, 1, 1), self._parallel_decay(log_decay, block_length)
        )

    def _parallel_decay(self, log_decay: torch.Tensor, block_length: int | None) -> ParallelDecay | None:
        """`parallel_decay` for blocks of `block_length`; kept for the short lengths that decoding calls repeat
        (speculative verify calls), where recomputing it costs a few percent of the call."""
        if block_length is None:
            return None
        # In a compiled graph they are a few fused kernels; reading the dict there would be guarded on, and filling
        # it would fail that guard on the next call: every call length compiled twice. An exported program
        # (`ahead_of_time.py`) would keep tensors of its trace.
        if (
            block_length > self.MAX_KEPT_BLOCK_LENGTH
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
        ):
            return parallel_decay(log_decay, block_length)
        key = (block_length, log_decay.dtype, log_decay.device)
        if key not in self._kept_parallel_decays:
            # Made as ordinary tensors even inside `torch.inference_mode()`, so that training may use them later.
            with torch.inference_mode(False):
                self._kept_parallel_decays[key] = parallel_decay(log_decay, block_length)
        return self._kept_parallel_decays[key]

    def prefix_decays(self, log_decay: torch.Tensor, length: int) -> torch.Tensor | None:
        """`retention_prefix_decays(log_decay, length)`, kept for the short lengths of speculative verify calls (a
        `RetNetCache` rolls back into such a call after nearly every one); None for longer calls, whose few
        rollbacks compute only the rows they need.

        Example:

        ```python
        >>> table = model.model.positions.prefix_decays(log_decay, 5)  # [6, heads, 6]
        ```
        """
        if length > self.MAX_KEPT_BLOCK_LENGTH:
            return None
        key = (length, log_decay.dtype, log_decay.device)
        table = self._kept_prefix_decays.get(key)
        if table is None:
            with torch.inference_mode(False):  # an ordinary tensor, as `_parallel_decay` keeps them
                table = self._kept_prefix_decays[key] = retention_prefix_decays(log_decay, length)
        return table


class FlashVideoCodePositions(nn.Module):
    """Learned embedding of each token's place in its frame (`config.code_position_embeddings`).

    A token's place is its distance to the latest serial-number token: 0 on `<SN_i>` itself, which predicts the
    frame's first code, up to code_grid_size² on the frame's last code. So the embedding tells each position which
    grid cell (row, column) comes next. Positions before any serial number (the caption, padding) and beyond a frame
    get none. The places are read from the token ids; the last one is carried across calls in the `RetNetCache`.
    """

    def __init__(self, config: FlashVideoConfig):
        super().__init__()
        self.serial_token_range = config.serial_token_range
        self.tokens_per_frame = config.tokens_per_frame
        self.weight = nn.Parameter(torch.zeros(config.tokens_per_frame + 1, config.hidden_size))

    def places(self, input_ids: torch.Tensor, past_places: torch.Tensor | None) -> torch.Tensor:
        """`[batch, length]` distance of each token to the latest serial number (-1: none yet), continuing the
        `[batch]` `past_places` of the tokens before (None: no tokens before)."""
        start, end = self.serial_token_range
        is_serial = (input_ids >= start) & (input_ids < end)
        if input_ids.shape[1] == 1 and past_places is not None:
            # The decode step, in as few operators as possible: one place on from the last (-1 stays -1), or 0.
            return torch.where(is_serial, 0, (past_places + (past_places >= 0))[:, None])
        index = torch.arange(input_ids.shape[1], device=input_ids.device)
        latest_serial = torch.where(is_serial, index, -1).cummax(dim=1).values
        places = torch.where(latest_serial >= 0, index - latest_serial, -1)
        if past_places is not None:
            continued = past_places[:, None] + 1 + index
            places = torch.where((latest_serial < 0) & (past_places[:, None] >= 0), continued, places)
        return places

    def forward(self, places: torch.Tensor) -> torch.Tensor:
        # Places outside a frame (-1 or past its last code) get zeros; a mask is cheaper per decode step than
        # padding the table with a zero row on every call. A place is in the frame iff clamping leaves it as it is.
        clamped = places.clamp(0, self.tokens_per_frame)
        return nn.functional.embedding(clamped, self.weight) * (clamped == places).unsqueeze(-1)


class FlashVideoMultiScaleRetention(nn.Module):
    """Multi-scale retention (MSR): one decay γ_h per head, gated output, per-head RMSNorm.

    q, k, v and the output gate g come from one projection, `qkvg_proj` (d → 2d + 2·H·d_v, rows [q; k; v; g]): one
    matrix product per call instead of four. Checkpoints with separate `q_proj`/`k_proj`/`v_proj`/`g_proj` load
    unchanged (fused at load, see `LEGACY_PROJECTIONS`).
    """

    def __init__(self, config: FlashVideoConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.value_head_dim = config.value_head_dim
        self.chunk_size = config.chunk_size
        self.split_sizes = [2 * config.hidden_size, config.value_dim, config.value_dim]  # [q; k], v, g
        self.qkvg_proj = nn.Linear(config.hidden_size, sum(self.split_sizes), bias=False)
        self.o_proj = nn.Linear(config.value_dim, config.hidden_size, bias=False)
        # The per-head RMSNorm has no weight, so it is a function call rather than a module (one module call fewer
        # per layer and step); retention outputs are in float32 or float64 already.
        self.head_norm_eps = config.rms_norm_eps
        self.register_load_state_dict_pre_hook(fuse_legacy_projections)

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: RetentionPositions,
        padding_mask: torch.Tensor | None,
        past_state: torch.Tensor | None,
        forward_mode: ForwardMode,
        output_final_state: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """Returns the output, the state after the last token (a new tensor: `past_state` is never modified; None
        unless `output_final_state`), and the keys and values fed to retention, after rotation, scaling and padding
        (what a `RetNetCache` keeps to roll back inside this call)."""
        batch, length, _ = hidden_states.shape
        compute_dtype = positions.log_decay.dtype
        qk, v, gate = self.qkvg_proj(hidden_states).split(self.split_sizes, dim=-1)
        qk = qk.view(batch, length, 2, self.num_heads, self.head_dim)
        v = v.view(batch, length, self.num_heads, self.value_head_dim).transpose(1, 2)  # [batch, heads, length, d_v]
        if qk.dtype != compute_dtype:
            qk, v = qk.to(compute_dtype), v.to(compute_dtype)
        # q and k are rotated in one complex multiplication, which also scales k by d_k^−0.5.
        q, k = rotate_pairs(qk, positions.rotation).transpose(1, 3).unbind(2)  # [batch, heads, length, d_k]
        if padding_mask is not None:
            # Zero k and v at padded positions so that the state, hence every later token, ignores them.
            keep = padding_mask[:, None, :, None].to(compute_dtype)
            k, v = k * keep, v * keep
        if past_state is not None and past_state.dtype != compute_dtype:
            past_state = past_state.to(compute_dtype)

        # k is scaled by d_k^−0.5 in the rotation already, hence the retention functions' scale of 1.
        if forward_mode == "recurrent":
            output, state = recurrent_retention(
                q, k, v, positions.log_decay, past_state, positions.decay, output_final_state=output_final_state
            )
        elif forward_mode == "chunkwise":
            output, state = chunkwise_retention(
                q, k, v, positions.log_decay, self.chunk_size, past_state, positions.parallel_decay,
                output_final_state=output_final_state,
            )  # fmt: skip
        else:
            output, state = parallel_retention(
                q, k, v, positions.log_decay, past_state, positions.parallel_decay,
                output_final_state=output_final_state,
            )  # fmt: skip

        output = nn.functional.rms_norm(output, output.shape[-1:], eps=self.head_norm_eps)  # [b, heads, length, d_v]
        output = output.transpose(1, 2).reshape(batch, length, -1)
        if output.dtype != gate.dtype:
            output = output.to(gate.dtype)
        # The output gate is RetNet's swish whatever `hidden_act` says (that one is the feed-forward's).
        return self.o_proj(nn.functional.silu(gate) * output), state, (k, v)


class FlashVideoGLU(nn.Module):
    """GLU feed-forward, named as in Llama: down_proj(act(gate_proj x) ⊙ up_proj x), act = `ACT2FN[hidden_act]`
    (RetNet's and the shipped checkpoints': silu).

    gate_proj and up_proj are one projection, `gate_up_proj` (rows [gate; up], as in Phi-3). Checkpoints from before
    the fusion (`fc1` the activated branch, `gate` the other, `fc2` the output) load unchanged, see
    `LEGACY_PROJECTIONS`.
    """

    def __init__(self, config: FlashVideoConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]
        self.register_load_state_dict_pre_hook(fuse_legacy_projections)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)


class FlashVideoDecoderLayer(GradientCheckpointingLayer):
    # The layer only reads the past state and returns the new one (the model writes it into the cache), so a
    # recomputation during backward has no side effect.
    _can_checkpoint_with_cache = True

    def __init__(self, config: FlashVideoConfig, layer_idx: int):
        super().__init__()
        self.retention_norm = FlashVideoRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.retention = FlashVideoMultiScaleRetention(config, layer_idx)
        self.ffn_norm = FlashVideoRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ffn = FlashVideoGLU(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: RetentionPositions,
        padding_mask: torch.Tensor | None = None,
        past_state: torch.Tensor | None = None,
        forward_mode: ForwardMode = "parallel",
        output_final_state: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        retained, state, keys_and_values = self.retention(
            self.retention_norm(hidden_states), positions, padding_mask, past_state, forward_mode, output_final_state
        )
        hidden_states = hidden_states + retained
        hidden_states = hidden_states + self.ffn(self.ffn_norm(hidden_states))
        return hidden_states, state, keys_and_values


# Checkpoints from before the fused projections, the shipped one included, name them separately. Per module: fused
# parameter -> the parameters it concatenates (in row order) and the config fields that give their row counts.
LEGACY_PROJECTIONS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "retention": {
        "qkvg_proj.weight": (
            ("q_proj.weight", "hidden_size"),
            ("k_proj.weight", "hidden_size"),
            ("v_proj.weight", "value_dim"),
            ("g_proj.weight", "value_dim"),
        ),
    },
    "ffn": {
        "gate_up_proj.weight": (("fc1.weight", "intermediate_size"), ("gate.weight", "intermediate_size")),
        "down_proj.weight": (("fc2.weight", "intermediate_size"),),
    },
}
_LEGACY_BY_CLASS = {FlashVideoMultiScaleRetention: "retention", FlashVideoGLU: "ffn"}


def fuse_legacy_projections(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """`load_state_dict` pre-hook: rewrite a module's legacy weights (`module.q_proj.weight`, …) into the fused ones,
    in place, for plain PyTorch loading (e.g. `accelerate`'s `load_state`). `from_pretrained` converts with the
    transformers mapping registered below instead."""
    for fused, parts in LEGACY_PROJECTIONS[_LEGACY_BY_CLASS[type(module)]].items():
        names = [prefix + name for name, _ in parts]
        if prefix + fused not in state_dict and all(name in state_dict for name in names):
            state_dict[prefix + fused] = torch.cat([state_dict.pop(name) for name in names])


class _ConcatenateRows(Concatenate):
    """Concatenate along rows; reversed (`save_pretrained(save_original_format=True)`), split back into the row
    counts named by config fields (transformers' own reverse, `Chunk`, only makes equal parts)."""

    def __init__(self, size_fields: tuple[str, ...]):
        super().__init__(dim=0)
        self.size_fields = size_fields

    @property
    def reverse_op(self) -> ConversionOps:
        return _SplitRows(self.size_fields)


class _SplitRows(ConversionOps):
    def __init__(self, size_fields: tuple[str, ...]):
        self.size_fields = size_fields

    @torch.no_grad()
    def convert(self, input_dict: dict[str, Any], source_patterns: list[str], target_patterns: list[str], **kwargs):
        tensor = next(iter(input_dict.values()))
        tensor = tensor[0] if isinstance(tensor, list) else tensor
        sizes = [getattr(kwargs["config"], field) for field in self.size_fields]
        return {target: part.contiguous() for target, part in zip(target_patterns, tensor.split(sizes))}

    @property
    def reverse_op(self) -> ConversionOps:
        return _ConcatenateRows(self.size_fields)


def _legacy_weight_conversions() -> list[WeightConverter | WeightRenaming]:
    """The transformers form of `LEGACY_PROJECTIONS`, applied by `from_pretrained` to every FlashVideo checkpoint
    (keys already fused match nothing and load as they are)."""
    conversions = []
    for module, projections in LEGACY_PROJECTIONS.items():
        for fused, parts in projections.items():
            sources = [f"{module}.{name}" for name, _ in parts]
            if len(parts) == 1:
                conversions.append(WeightRenaming(sources[0], f"{module}.{fused}"))
            else:
                fields = tuple(field for _, field in parts)
                conversions.append(WeightConverter(sources, f"{module}.{fused}", [_ConcatenateRows(fields)]))
    return conversions


# Registered by model type, which transformers looks up for custom-code models too (the copy a `trust_remote_code`
# user loads re-registers the same mapping, hence `overwrite`).
register_checkpoint_conversion_mapping("flashvideo", _legacy_weight_conversions(), overwrite=True)


class FlashVideoPreTrainedModel(PreTrainedModel):
    config_class = FlashVideoConfig
    config: FlashVideoConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FlashVideoDecoderLayer"]
    # transformers reads `_is_stateful` as "its cache cannot be rolled back" and then refuses assisted decoding.
    # RetNetCache can roll back over its last calls (`crop`), so prompt lookup and assistant models work.
    _is_stateful = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not create a DynamicCache: the model creates its own RetNetCache in `forward`.
        return False

    def save_pretrained(self, *args, save_original_format: bool = False, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, writing the fused `qkvg_proj`/`gate_up_proj` weights as they are.

        transformers would by default undo the load-time conversion (`LEGACY_PROJECTIONS`), i.e. write every new
        checkpoint in the layout from before the fusion; `save_original_format=True` still does, for FlashVideo
        code older than the fused projections. Both layouts load.
        """
        return super().save_pretrained(*args, save_original_format=save_original_format, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, FlashVideoRetentionPositions):
            # copy_ casts to the buffers' dtype
            for buffer, value in zip(
                (module.log_decay, module.angles, module.rotation_scales), module.exact_constants(dtype=torch.float64)
            ):
                init.copy_(buffer, value)
            module._kept_parallel_decays, module._kept_prefix_decays = {}, {}  # derived from the buffers just written
        elif isinstance(module, FlashVideoCodePositions):
            init.zeros_(module.weight)


class FlashVideoModel(FlashVideoPreTrainedModel):
    """The FlashVideo RetNet decoder without the LM head; returns hidden states and the `RetNetCache`.

    Example:

    ```python
    >>> from flashvideo import FlashVideoConfig, FlashVideoModel
    >>> model = FlashVideoModel(FlashVideoConfig(hidden_size=64, num_hidden_layers=2))
    >>> out = model(torch.tensor([[5, 6, 7]]), forward_mode="chunkwise")
    >>> out.last_hidden_state.shape
    torch.Size([1, 3, 64])
    ```
    """

    def __init__(self, config: FlashVideoConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.positions = FlashVideoRetentionPositions(config)
        self.code_positions = FlashVideoCodePositions(config) if config.code_position_embeddings else None
        self.layers = nn.ModuleList(
            [FlashVideoDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = FlashVideoRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        # Read on every call, and a config read costs a microsecond or two. Neither can change after init: the
        # layers are built for this many, and hold this chunk size themselves.
        self._num_layers, self._chunk_size = config.num_hidden_layers, config.chunk_size
        self._compiled_run = None  # `_embed_and_run_layers` compiled, set by `compile_recurrent_step`
        self._compiled_call_lengths = frozenset()  # multi-token call lengths that take the compiled path too
        # Inference runs the layers as one function over their weights (`fused_layers.py`) where that is exact;
        # False keeps the module path everywhere. The decoder is found on first use and again after train()/eval()
        # or a move (None: not looked for yet; False: the layers are not plain FlashVideo layers).
        self.fused_inference = True
        self._fused_decoder: FusedDecoder | None | Literal[False] = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _embed_and_run_layers(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_places: torch.Tensor | None,
        positions: torch.Tensor,
        padding_mask: torch.Tensor | None,
        past_states: list[torch.Tensor | None],
        forward_mode: ForwardMode,
        output_hidden_states: bool,
        output_final_states: bool = True,
        fused: bool = False,
    ) -> tuple[
        torch.Tensor, list, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, tuple | None, torch.Tensor | None
    ]:
        """The embeddings (token and code position), every layer and the final norm, on tensors only (no cache
        object): what `compile_recurrent_step` compiles, so that a decode step is one compiled call.

        Returns the hidden states, each layer's final state (None unless `output_final_states`: without a cache,
        e.g. in training, nothing needs them) and its keys and values, log γ, the hidden states of every layer when
        asked, and the tokens' places in their frames (None without code position embeddings). `fused`: the layers
        as one function over their weights (`fused_layers.py`) instead of through the modules, where
        `_fused_path_applies`."""
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        places = None
        if self.code_positions is not None:
            places = self.code_positions.places(input_ids, past_places)
            hidden_states = hidden_states + self.code_positions(places).to(hidden_states.dtype)
        compute_dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        length = hidden_states.shape[1]
        # The parallel form's decay factors depend on the block length only: computed once here for every layer.
        block_length = {"parallel": length, "chunkwise": min(length, self._chunk_size)}.get(forward_mode)
        retention_positions = self.positions(positions, compute_dtype, block_length)
        if fused:
            hidden_states, states, keys_and_values = fused_decoder_layers(
                self._fused_decoder, hidden_states, retention_positions, padding_mask, past_states, output_final_states
            )
            return hidden_states, states, keys_and_values, retention_positions.log_decay, None, places
        all_hidden_states = () if output_hidden_states else None
        states, keys_and_values = [], []
        for layer, past_state in zip(self.layers, past_states):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, state, layer_keys_and_values = layer(
                hidden_states,
                retention_positions,
                padding_mask=padding_mask,
                past_state=past_state,
                forward_mode=forward_mode,
                output_final_state=output_final_states,
            )
            states.append(state)
            keys_and_values.append(layer_keys_and_values)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, states, keys_and_values, retention_positions.log_decay, all_hidden_states, places

    def _fused_path_applies(self, forward_mode: ForwardMode, output_hidden_states: bool, dtype: torch.dtype) -> bool:
        """Whether this call may run the layers fused (`_embed_and_run_layers(fused=True)`): inference in
        float32/float64 in the recurrent or parallel form, the layers still plain FlashVideo layers without hooks (see
        `fused_layers.FusedDecoder`)."""
        if (
            not self.fused_inference
            or self.training
            or output_hidden_states
            or forward_mode == "chunkwise"
            or dtype not in (torch.float32, torch.float64)
        ):
            return False
        decoder = self._fused_decoder
        if decoder is None or (decoder is not False and not decoder.matches(self)):
            decoder = self._fused_decoder = FusedDecoder.from_model(self) or False
        return decoder is not False and not decoder.hooked()

    def train(self, mode: bool = True):
        self._fused_decoder = None  # look at the layers again on the next inference call
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self._fused_decoder = None
        return super()._apply(fn, recurse)

    def compile_recurrent_step(
        self, call_lengths: tuple[int, ...] = (), ahead_of_time: bool | None = None, **compile_kwargs
    ) -> None:
        """Compile the decode step (one token through the embeddings and every layer in recurrent form).

        A recurrent step at this model size is a few hundred small operators, so in eager mode its time is mostly
        per-operator overhead; compiled, the step is one call into generated code: the elementwise work fused into
        a few kernels around the matrix products. Only inference calls of one token take the compiled path, so
        prefill, chunkwise feeding and training are unchanged; outputs match the eager step to float rounding.
        `call_lengths`: multi-token calls of these lengths from a cache (parallel form) take the compiled path too —
        speculative decoding's verify calls, which the pipeline pads to one length. The first call per batch size
        and length compiles (tens of seconds on a CPU, which needs a C++ compiler).

        `ahead_of_time` (the default unless `compile_kwargs` are given): each call shape is exported with
        `torch.export` and compiled by AOTInductor into a program that is called directly (`ahead_of_time.py`),
        without dynamo's guards and wrappers, which took as long as the generated code itself here. The model's
        weights are inputs of the programs, so updates to them are seen. `ahead_of_time=False`: `torch.compile`,
        with `compile_kwargs`; the defaults are `dynamic=False` (one graph per batch size and length) and, unless
        `mode` or `options` is given, inductor's C++ wrapper (`options={"cpp_wrapper": True}`). The shipped
        key-frame model's step on this project's CPU, one process, 1 thread: 1.15 ms eager, 0.59 ms with
        `torch.compile`, 0.45 ms ahead of time (a slow moment of the machine; `flashvideo bench decode --compile`
        compares it with the hardware floor).

        Example:

        ```python
        >>> model.model.compile_recurrent_step()  # or pipe.compile_recurrent_step() for both pipeline models
        >>> model.generate(prompt_ids, max_new_tokens=256, do_sample=True)
        ```
        """
        if ahead_of_time is None:
            ahead_of_time = not compile_kwargs
        if ahead_of_time and compile_kwargs:
            raise ValueError(
                f"compile_kwargs go to torch.compile, which ahead_of_time=True does not use; got "
                f"{sorted(compile_kwargs)}. Pass ahead_of_time=False to compile with them."
            )
        self._compiled_call_lengths = frozenset(call_lengths)
        if ahead_of_time:
            self._compiled_run = AheadOfTimeStep(self)
            return
        # Dynamo keeps at most `recompile_limit` graphs per function (8 by default) and runs any further shape
        # eagerly, with only a warning. This function is shared by every FlashVideo model (a pipeline compiles two,
        # a benchmark more), and each needs one graph per batch size, call length and position layout: 8 are too few.
        if torch._dynamo.config.recompile_limit < COMPILED_GRAPHS_PER_FUNCTION:
            logger.info(f"Raising torch._dynamo.config.recompile_limit to {COMPILED_GRAPHS_PER_FUNCTION}")
            torch._dynamo.config.recompile_limit = COMPILED_GRAPHS_PER_FUNCTION
        defaults = {"dynamic": False}
        if "mode" not in compile_kwargs and "options" not in compile_kwargs:
            # The generated kernels called from C++ rather than from a Python function: about a quarter of the
            # compiled step here (0.163 against 0.217 ms).
            defaults["options"] = {"cpp_wrapper": True}
        self._compiled_run = torch.compile(self._embed_and_run_layers, **{**defaults, **compile_kwargs})

    def _check_input_ids(self, input_ids: torch.Tensor, check_values: bool = True) -> None:
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(
                f"input_ids must be an integer tensor of token ids, got dtype {input_ids.dtype}."
            )
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, length], got {tuple(input_ids.shape)}.")
        if not check_values:
            return
        # One pass, but a device sync: internal decoding loops validate once and then pass check_inputs=False.
        low, high = torch.stack(torch.aminmax(input_ids)).tolist()
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(
                f"input_ids must be in [0, {self.config.vocab_size - 1}] (vocab_size={self.config.vocab_size}), "
                f"got values in [{low}, {high}]."
            )

    def _resolve_forward_mode(self, forward_mode: str, length: int) -> ForwardMode:
        if forward_mode not in FORWARD_MODES:
            raise ValueError(f"forward_mode must be one of {FORWARD_MODES}, got {forward_mode!r}.")
        if forward_mode != "auto":
            return forward_mode
        if length == 1:
            return "recurrent"
        return "parallel" if length <= self._chunk_size else "chunkwise"

    def _check_cache(self, cache: RetNetCache, batch_size: int) -> None:
        if not isinstance(cache, RetNetCache):
            raise ValueError(
                f"cache must be a RetNetCache (FlashVideo keeps a recurrent state, not keys and values), "
                f"got {type(cache).__name__}."
            )
        cache.check_batch_size(batch_size)
        if cache.num_layers < self._num_layers:  # the states are read by layer index below
            raise ValueError(
                f"cache holds states for {cache.num_layers} layers, but the model has {self._num_layers}; pass "
                "RetNetCache(config.num_hidden_layers)."
            )

    def _run(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        cache: RetNetCache | None,
        padding_mask: torch.Tensor | None,
        forward_mode: ForwardMode,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple | None]:
        """One call once its arguments are checked (`forward` checks them; `FlashVideoForCausalLM.decode` checks
        shapes and dtypes only): embeddings, code positions, the layers, and the cache updated in place. Returns
        the final hidden states and, when asked, those of every layer."""
        fed = input_ids if input_ids is not None else inputs_embeds
        length, device = fed.shape[1], fed.device
        forward_mode = self._resolve_forward_mode(forward_mode, length)
        if cache is not None:
            positions, past_places = cache.positions(length, device), cache.frame_places
            past_states = cache.states[: self._num_layers]
        else:
            positions, past_places = torch.arange(length, device=device), None
            past_states = [None] * self._num_layers
        dtype = inputs_embeds.dtype if inputs_embeds is not None else self.embed_tokens.weight.dtype
        fused = self._fused_path_applies(forward_mode, output_hidden_states, dtype)
        compiled_shape = (forward_mode == "recurrent" and length == 1) or (
            forward_mode == "parallel" and length in self._compiled_call_lengths and cache is not None
        )
        compiled = self._compiled_run is not None and compiled_shape and not self.training
        run = self._compiled_run if compiled else self._embed_and_run_layers
        # A multi-token parallel-form call leaves its final states to the cache, which computes them from the
        # call's keys and values when they are first read: after a speculative verify call `rewind` usually asks
        # for the states at a shorter prefix, so the full-length ones would be thrown away. (The compiled path
        # computes them in its graph.)
        defer_states = cache is not None and forward_mode == "parallel" and length > 1 and not compiled
        hidden_states, states, keys_and_values, log_decay, all_hidden_states, places = run(
            input_ids, inputs_embeds, past_places, positions, padding_mask, past_states, forward_mode,
            output_hidden_states, cache is not None and not defer_states, fused,
        )  # fmt: skip
        if cache is not None:
            prefix_decays = self.positions.prefix_decays(log_decay, length) if length > 1 else None
            cache.update(None if defer_states else states, keys_and_values, log_decay, places, length, prefix_decays)
        return hidden_states, all_hidden_states

    @can_return_tuple  # return_dict=False (or config.return_dict=False) gives output.to_tuple()
    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: RetNetCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        forward_mode: ForwardMode = "auto",
        check_inputs: bool = True,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        r"""
        Args:
            input_ids: `[batch, length]` token ids.
            attention_mask: `[batch, past + length]` (or `[batch, length]`) with 0 at padding; padded tokens are
                excluded from the recurrent state, so a left-padded sample gives its unpadded result.
            cache: a `RetNetCache` to continue from; created here when `use_cache` and none is given
                (`past_key_values`, its name before transformers 5.24, is still accepted with a warning).
            forward_mode: "parallel" (O(L²), one call), "chunkwise" (blocks of `config.chunk_size`),
                "recurrent" (token by token) or "auto" (recurrent for one token, else parallel up to a chunk and
                chunkwise beyond). All give the same outputs and leave the same state.
            check_inputs: False skips what reads tensor values on the host, which would wait for the device on
                every call: the range check of `input_ids` (validate them once, before a decoding loop) and the
                test whether `attention_mask` pads anything (it is then applied as given; all ones is exact too).
                Shapes and dtypes are checked either way.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None:
            self._check_input_ids(input_ids, check_values=check_inputs)
        elif self.code_positions is not None:
            raise ValueError(
                "This model adds code position embeddings (config.code_position_embeddings), which are read from the "
                "serial-number tokens: pass input_ids rather than inputs_embeds."
            )
        batch_size, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]

        if use_cache and cache is None:
            cache = RetNetCache(self._num_layers)
        if cache is not None:
            self._check_cache(cache, batch_size)
        past_length = cache.get_seq_length() if cache is not None else 0

        padding_mask = None
        if attention_mask is not None:
            if (
                attention_mask.dim() != 2
                or attention_mask.shape[0] != batch_size
                or attention_mask.shape[1] < length
            ):
                raise ValueError(
                    f"attention_mask must have shape [batch, past + length] = [{batch_size}, {past_length + length}] "
                    f"or [{batch_size}, {length}], got {tuple(attention_mask.shape)}."
                )
            padding_mask = attention_mask[:, -length:].bool()
            if check_inputs and bool(padding_mask.all()):  # nothing padded: skip the masking in every layer
                padding_mask = None

        hidden_states, all_hidden_states = self._run(
            input_ids, inputs_embeds, cache, padding_mask, forward_mode, bool(output_hidden_states)
        )
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
        )
        return output


class FlashVideoForCausalLM(FlashVideoPreTrainedModel, GenerationMixin):
    """FlashVideo with a language-modelling head over the shared text / serial-number / image-code vocabulary.

    `generate()` prefills the prompt in parallel/chunkwise form, then decodes recurrently through a
    `RetNetCache`: time and memory per new token do not depend on how many tokens came before.

    Example:

    ```python
    >>> from flashvideo import FlashVideoConfig, FlashVideoForCausalLM
    >>> model = FlashVideoForCausalLM(FlashVideoConfig(hidden_size=64, num_hidden_layers=2))
    >>> prompt = torch.tensor([[40, 41, 3]])
    >>> video_tokens = model.generate(prompt, max_new_tokens=256, do_sample=True, top_k=50)
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: FlashVideoConfig):
        super().__init__(config)
        self.model = FlashVideoModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def compile_recurrent_step(
        self, call_lengths: tuple[int, ...] = (), ahead_of_time: bool | None = None, **compile_kwargs
    ) -> None:
        """Compile the decoder's recurrent step (and calls of `call_lengths`); see
        `FlashVideoModel.compile_recurrent_step`."""
        self.model.compile_recurrent_step(call_lengths, ahead_of_time, **compile_kwargs)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs) -> None:
        # generate() would make a DynamicCache; a RetNetCache made here, before the first call, is also what assisted
        # decoding needs (it checks for a cache up front and asks it to record the past).
        if model_kwargs.get("cache") is None and generation_config.use_cache is not False:
            if generation_config.cache_implementation is not None:
                raise ValueError(
                    f"cache_implementation={generation_config.cache_implementation!r} does not apply to FlashVideo, "
                    "which generates with a RetNetCache (a recurrent state, not keys and values)."
                )
            model_kwargs["cache"] = RetNetCache(self.config.num_hidden_layers)
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, cache=None, attention_mask=None, **kwargs):
        if cache is not None and not isinstance(cache, RetNetCache):
            raise ValueError(
                f"FlashVideo generates with a RetNetCache; got a cache of type "
                f"{type(cache).__name__} (cache_implementation options do not apply to retention)."
            )
        return super().prepare_inputs_for_generation(
            input_ids, cache=cache, attention_mask=attention_mask, **kwargs
        )

    def decode(
        self,
        input_ids: torch.LongTensor,
        cache: RetNetCache,
        logits_to_keep: int | torch.Tensor = 1,
        logits_vocab_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """One call of a decoding loop: the logits of the last `logits_to_keep` positions of `input_ids`
        `[batch, length]` (for the token ids in `logits_vocab_range` only, when given), in the dtype they are
        computed in; `cache` is updated in place.

        The same computation as `self(input_ids, cache=cache, use_cache=True, logits_to_keep=…,
        logits_vocab_range=…, check_inputs=False).logits`, without what a decoding loop does not need: no output
        objects, no transformers decorators, no nested module calls, and no range check of the ids (validate them
        once, before the loop; shapes and dtypes are still checked). Whenever the two could differ it calls the
        model: in training mode, with forward hooks or pre-hooks on the model, its decoder or its LM head (or
        global ones), with `forward` replaced on one of them (as accelerate's hooks do) or overridden in a
        subclass, or with `nn.Module.compile()` used on them.

        Example:

        ```python
        >>> cache = RetNetCache(model.config.num_hidden_layers)
        >>> model(prompt_ids, cache=cache, use_cache=True)  # prefill (checked)
        >>> image_codes = model.config.image_token_range
        >>> logits = model.decode(draft_ids, cache, logits_to_keep=5, logits_vocab_range=image_codes)  # [b, 5, codes]
        >>> cache.rewind([2, 5, 3])  # keep each row's accepted prefix
        ```
        """
        if self._decode_calls_forward():
            return self(
                input_ids, cache=cache, use_cache=True, logits_to_keep=logits_to_keep,
                logits_vocab_range=logits_vocab_range, check_inputs=False,
            ).logits  # fmt: skip
        model = self.model
        model._check_input_ids(input_ids, check_values=False)
        model._check_cache(cache, input_ids.shape[0])
        hidden_states, _ = model._run(input_ids, None, cache, None, "auto", False)
        return self._logits(slice_logits_to_keep(hidden_states, logits_to_keep), logits_vocab_range)

    def _decode_calls_forward(self) -> bool:
        """Whether `decode` must go through the modules' calls, because they could do something `forward` alone
        does not (see `decode`)."""
        if self.training or self.model.training:
            return True
        hooks = nn.modules.module
        if (
            hooks._global_forward_hooks
            or hooks._global_forward_pre_hooks
            or hooks._global_backward_hooks
            or hooks._global_backward_pre_hooks
        ):
            return True
        for module in (self, self.model, self.lm_head):
            if (
                module._forward_hooks
                or module._forward_pre_hooks
                or module._backward_hooks
                or module._backward_pre_hooks
                or module._compiled_call_impl is not None  # nn.Module.compile()
            ):
                return True
            if forward_replaced(module):  # accelerate's add_hook_to_module, or any patched forward
                return True
        return type(self).forward is not FlashVideoForCausalLM.forward or (
            type(self.model).forward is not FlashVideoModel.forward
        )

    def _logits(self, hidden_states: torch.Tensor, vocab_range: tuple[int, int] | None) -> torch.Tensor:
        """The LM head on `hidden_states`, for the token ids in `vocab_range` only when given."""
        head = self.lm_head
        # A plain head is one matrix product, called as such: the module call around it is a tenth of a compiled
        # decode step at the shipped size. An adapted or hooked head (accelerate's offloading replaces `forward`)
        # is called as it is, then sliced.
        plain = (
            type(head) is nn.Linear
            and head.bias is None
            and not (head._forward_hooks or head._forward_pre_hooks or forward_replaced(head))
        )
        if vocab_range is None:
            return nn.functional.linear(hidden_states, head.weight) if plain else head(hidden_states)
        start, end = vocab_range
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= self.config.vocab_size):
            raise ValueError(
                f"logits_vocab_range must be (start, end) with 0 <= start < end <= {self.config.vocab_size} "
                f"(vocab_size), got {vocab_range!r}."
            )
        if plain:
            return nn.functional.linear(hidden_states, head.weight[start:end])
        return head(hidden_states)[..., start:end]

    @can_return_tuple  # return_dict=False (or config.return_dict=False) gives output.to_tuple()
    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: RetNetCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        forward_mode: ForwardMode = "auto",
        logits_to_keep: int | torch.Tensor = 0,
        logits_vocab_range: tuple[int, int] | None = None,
        check_inputs: bool = True,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        r"""
        Args:
            labels: `[batch, length]` targets for the next-token loss (shifted inside); -100 is ignored. The
                processor labels text and serial-number positions -100, so the loss is on image codes only.
            logits_to_keep: compute logits only for the last `logits_to_keep` positions (0: all).
            logits_vocab_range: `(start, end)`: compute logits only for token ids `start … end − 1` (the last
                dimension of `logits` is then `end − start`), e.g. `config.image_token_range` for a sampler that
                only ever draws image codes; the LM head then reads a third of its weights for the shipped models.

        See `FlashVideoModel.forward` for the other arguments.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            forward_mode=forward_mode,
            check_inputs=check_inputs,
            return_dict=True,  # whatever config.return_dict says: the fields are read below
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self._logits(hidden_states, logits_vocab_range)

        loss = None
        if labels is not None:
            if logits_vocab_range is not None:
                raise ValueError("labels need the logits of the whole vocabulary: pass logits_vocab_range=None.")
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )

        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
        )
        return output


__all__ = ["RetNetCache", "FlashVideoPreTrainedModel", "FlashVideoModel", "FlashVideoForCausalLM"]
