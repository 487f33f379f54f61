"""The retention operator in its three equivalent forms (RetNet, Sun et al. 2023; FlashVideo §3.1).

Pure tensor math, no parameters: the layers in `modeling_flashvideo.py` project the inputs and call these.
Shapes: queries and keys `[batch, heads, length, d_k]`, values `[batch, heads, length, d_v]`, recurrent state
`[batch, heads, d_k, d_v]`, per-head log-decay `log γ` of shape `[heads]`.

With S_n = Σ_{m≤n} γ^{n−m} k_mᵀ v_m, every form returns o_n = q_n S_n (plus the contribution of an initial
state S_{-1}, decayed by γ^{n+1}) and the final state S_{L−1}, so a prompt prefilled in any form leaves exactly
the state token-by-token decoding would have left.

Unlike torchscale we apply no per-row rescaling of the decay matrix: the per-head RMSNorm that follows removes
any positive per-row factor anyway, the row sums are bounded by the length and by 1/(1−γ_h) = 2^(e_h), and the
functions below run in float32 (or float64) whatever the model dtype, which keeps half-precision models in range.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch


def retnet_decay_exponents(num_heads: int) -> list[float]:
    """RetNet's decay exponents e_h = 5 + h, h = 0..H−1 (γ_h = 1 − 2^(−e_h))."""
    return [5.0 + head for head in range(num_heads)]


def retention_log_decay(num_heads: int, exponents: Sequence[float] | None = None) -> torch.Tensor:
    """log γ_h with γ_h = 1 − 2^(−e_h): RetNet's e_h = 5 + h, h = 0..H−1, unless `exponents` are given (float64 for
    exactness; callers cast)."""
    exponents = torch.tensor(retnet_decay_exponents(num_heads) if exponents is None else exponents, dtype=torch.float64)
    if exponents.shape != (num_heads,):
        raise ValueError(f"exponents must hold one number per head ({num_heads}), got {exponents.tolist()}.")
    return torch.log1p(-torch.pow(2.0, -exponents))


def rotation_angles(head_dim: int) -> torch.Tensor:
    """θ_i = 10000^(−i/(d_k/2−1)), each repeated twice (interleaved pairs), shape `[d_k]`."""
    theta = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 2, dtype=torch.float64))
    return theta.repeat_interleave(2)


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, …) → (−x1, x0, −x3, x2, …)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def rotation_phasors(positions: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The rotation by nθ as complex numbers s·e^(i·nθ), one per pair of dimensions and scale s.

    `positions`: `[length]` or `[batch, length]`; `angles`: θ `[d_k/2]`; `scales`: any shape that broadcasts to
    `[scales..., d_k/2]` (e.g. `[2, 1, 1]` for queries and keys, see `rotate_pairs`). Returns complex phasors of shape
    `positions.shape + scales.shape[:-1] + (d_k/2,)`, in `angles`' precision.
    """
    phase = positions.to(angles.dtype).reshape(positions.shape + (1,) * scales.dim()) * angles
    return torch.polar(scales, phase)


def rotate_pairs(x: torch.Tensor, phasors: torch.Tensor) -> torch.Tensor:
    """x·cos(nθ) + rotate_every_two(x)·sin(nθ), as one complex multiplication.

    Each interleaved pair (x_2j, x_2j+1) is the complex number x_2j + i·x_2j+1, and multiplying it by e^(i·nθ_j) is
    exactly the rotation (RetNet's `theta_shift`); a phasor of modulus s also scales by s. `x`: real `[..., d_k]`
    whose last dimension is contiguous; `phasors`: complex, broadcasting to `x.shape[:-1] + (d_k/2,)`.
    """
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * phasors).flatten(-2)


def _decay_powers(log_decay: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """γ_h^e for every head and exponent, shape `[heads, len(exponents)]`."""
    return torch.exp(log_decay[:, None] * exponents[None, :])


class ParallelDecay(NamedTuple):
    """The decay factors of the parallel form for one block length: they depend on γ and the length only, so one
    model call computes them once for all its layers (`parallel_decay`)."""

    matrix: torch.Tensor  # [H, L, L]: D_nm = γ^(n−m) for n ≥ m, else 0
    to_end: torch.Tensor  # [1, H, L, 1]: γ^(L−1−m), weights of the final state
    from_start: torch.Tensor  # [1, H, L, 1]: γ^(n+1), how much of the initial state reaches position n
    total: torch.Tensor  # [1, H, 1, 1]: γ^L, the initial state's share of the final state


def parallel_decay(log_decay: torch.Tensor, length: int) -> ParallelDecay:
    """`ParallelDecay` for blocks of `length` tokens, in `log_decay`'s dtype and device."""
    positions = torch.arange(length, device=log_decay.device, dtype=log_decay.dtype)
    distance = positions[:, None] - positions[None, :]
    # Mask before exponentiating: exp of a positive exponent (future positions) would overflow.
    causal_exponent = torch.where(distance >= 0, distance, torch.full_like(distance, math.inf))
    return ParallelDecay(
        torch.exp(log_decay[:, None, None] * causal_exponent),  # zeros above the diagonal
        _decay_powers(log_decay, (length - 1) - positions)[None, :, :, None],
        _decay_powers(log_decay, positions + 1)[None, :, :, None],
        torch.exp(log_decay * length)[None, :, None, None],
    )


def parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    decay: ParallelDecay | None = None,
    scale: float = 1.0,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Parallel form: O = ((Q Kᵀ) ⊙ D) V with D_nm = γ^(n−m) for n ≥ m, else 0. O(L²) time, one call.

    `decay`: `parallel_decay(log_decay, length)` when the caller has it already (computed here otherwise).
    `scale` multiplies the queries (fla's functions default it to d_k^−0.5; here 1, because FlashVideo's layers
    fold d_k^−0.5 into the keys' rotation, see `FlashVideoRetentionPositions`). `output_final_state=False` skips the
    state after the last token (training needs none) and returns None for it. Returns `(output, final_state)`.
    """
    if decay is None:
        decay = parallel_decay(log_decay, q.shape[-2])
    if scale != 1.0:
        q = q * scale
    output = ((q @ k.transpose(-1, -2)) * decay.matrix) @ v
    if initial_state is not None:
        output = output + (q * decay.from_start) @ initial_state
    if not output_final_state:
        return output, None
    # The state after the last token: S_{L−1} = Σ_m γ^{L−1−m} k_mᵀ v_m (+ γ^L S_{-1}).
    final_state = k.transpose(-1, -2) @ (v * decay.to_end)
    if initial_state is not None:
        final_state = final_state + decay.total * initial_state
    return output, final_state


def chunkwise_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
    decay: ParallelDecay | None = None,
    scale: float = 1.0,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise form: parallel within blocks of `chunk_size`, the recurrent state carried across blocks.

    R_{c+1} = γ^B R_c + K_cᵀ (V_c ⊙ ζ) is exactly the final state of the parallel form on block c started from
    R_c, so each block is one `parallel_retention` call. O(L·B) time and memory. `decay`: `parallel_decay` for the
    full blocks' length, when the caller has it (computed once here otherwise; blocks of another length, the last,
    compute their own). `scale`, `output_final_state`: as in `parallel_retention` (the states between blocks are
    computed either way; only the last one is dropped). Returns `(output, final_state)`.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    if decay is None and q.shape[-2] >= chunk_size:
        decay = parallel_decay(log_decay, chunk_size)
    if scale != 1.0:
        q = q * scale
    state = initial_state
    outputs = []
    length = q.shape[-2]
    for start in range(0, length, chunk_size):
        block = slice(start, start + chunk_size)
        block_q = q[..., block, :]
        same_length = decay is not None and decay.matrix.shape[-1] == block_q.shape[-2]
        block_output, state = parallel_retention(
            block_q, k[..., block, :], v[..., block, :], log_decay, state, decay if same_length else None,
            output_final_state=output_final_state or start + chunk_size < length,
        )  # fmt: skip
        outputs.append(block_output)
    return torch.cat(outputs, dim=-2), state


def recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    decay: torch.Tensor | None = None,
    scale: float = 1.0,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Recurrent form: S_n = γ S_{n−1} + k_nᵀ v_n, o_n = q_n S_n, one token at a time. O(1) per token.

    `decay`: γ itself, `[heads, 1, 1]`, when the caller has it already (one exp per model call instead of one per
    layer). `initial_state` is never modified: every step makes a new state tensor, so a cache may keep the old one.
    `scale`, `output_final_state`: as in `parallel_retention`. Returns `(output, final_state)`.
    """
    if decay is None:
        decay = torch.exp(log_decay)[:, None, None]
    if scale != 1.0:
        q = q * scale
    state = initial_state
    if k.shape[-2] == 1:  # the decode step: k_nᵀ v_n is a broadcast product, no loop, no concatenation
        outer = (k.transpose(-1, -2), v)
        state = torch.mul(*outer) if state is None else torch.addcmul(decay * state, *outer)
        return q @ state, state if output_final_state else None
    outputs = []
    for n in range(k.shape[-2]):
        outer = (k[..., n, :, None], v[..., n, None, :])
        state = torch.mul(*outer) if state is None else torch.addcmul(decay * state, *outer)
        outputs.append(q[..., n : n + 1, :] @ state)
    return torch.cat(outputs, dim=-2), state if output_final_state else None


def retention_state_at(
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    lengths: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state after the first `lengths[b]` tokens of a call, per row b, from the call's own keys and values.

    S_a = γ^a S_{-1} + Σ_{m<a} γ^(a−1−m) k_mᵀ v_m per head: the parallel form's final-state formula on the prefix.
    This is how a recurrent state is rolled back after speculative verification without re-feeding anything.
    `lengths` is a `[batch]` integer tensor with values in `[0, length]`; a row with length 0 keeps `initial_state`.

    Example:

    ```python
    >>> _, final = parallel_retention(q, k, v, log_decay, state)
    >>> prefix = retention_state_at(k, v, log_decay, torch.tensor([3]), state)  # as if only 3 tokens had been fed
    ```
    """
    return retention_states_at([k], [v], log_decay, lengths, [initial_state])[0]


def retention_prefix_decays(
    log_decay: torch.Tensor, length: int, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """The decay factors of prefixes of a call of `length` tokens, `[len(lengths), heads, length + 1]`: for a prefix
    of a tokens, γ^(a−1−m) for the tokens m < a (0 for the tokens after it) and, in the last column, γ^a (the share
    of the state before the call). `lengths`: the prefix lengths a, a `[n]` integer tensor (default: every length
    0 … `length`, the table a model keeps for short calls; see `retention_states_at`).

    Example:

    ```python
    >>> table = retention_prefix_decays(log_decay, 5)  # [6, heads, 6]
    >>> weights, share = table[3, :, :5], table[3, :, 5]  # keeping the first 3 of 5 tokens
    ```
    """
    positions = torch.arange(length + 1, device=log_decay.device)
    if lengths is None:
        lengths = positions
    lengths = lengths.to(log_decay.device)
    exponents = (lengths[:, None] - 1 - positions[None, :-1]).to(log_decay.dtype)  # [n, length]
    kept = positions[None, :-1] < lengths[:, None]
    weights = torch.exp(log_decay[None, :, None] * exponents.clamp(min=0)[:, None, :]) * kept[:, None, :]
    share = torch.exp(log_decay[None, :] * lengths[:, None].to(log_decay.dtype))[..., None]
    return torch.cat([weights, share], dim=-1)


def retention_states_at(
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    log_decay: torch.Tensor,
    lengths: torch.Tensor | int,
    initial_states: Sequence[torch.Tensor | None],
    prefix_decays: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """`retention_state_at` for several layers that share their decays (and the call's length): the prefix weights
    γ^(a−1−m) are computed once. `lengths`: a `[batch]` integer tensor, or one int for every row (the call's length:
    its final states, exactly as the parallel form computes them). `prefix_decays`: `retention_prefix_decays(log_decay,
    length)` when the caller keeps it (then the weights are one lookup, not computed here).

    Example:

    ```python
    >>> states = retention_states_at(keys, values, log_decay, torch.tensor([2, 5]), states_before)  # per row
    >>> finals = retention_states_at(keys, values, log_decay, keys[0].shape[-2], states_before)  # the whole call
    ```
    """
    length = keys[0].shape[-2]
    if isinstance(lengths, int):
        if prefix_decays is not None:
            rows = prefix_decays[lengths : lengths + 1]
        else:
            rows = retention_prefix_decays(log_decay, length, torch.tensor([lengths]))
    elif prefix_decays is not None:
        rows = prefix_decays.index_select(0, lengths.to(prefix_decays.device))
    else:
        rows = retention_prefix_decays(log_decay, length, lengths)
    weights, decayed = rows[..., :length, None], rows[..., length:, None]  # [batch, heads, length | 1, 1]
    # Σ_m γ^(a−1−m) k_mᵀ v_m for every layer in one batched product: a few small products cost mostly their call
    # overhead, and stacking the layers' keys and values costs less than the calls it saves.
    k, v = torch.stack(list(keys)), torch.stack(list(values)) * weights  # [layers, batch, heads, length, d]
    sums = torch.bmm(k.flatten(0, 2).transpose(1, 2), v.flatten(0, 2)).view(*k.shape[:3], k.shape[-1], v.shape[-1])
    return [
        state if initial_state is None else torch.addcmul(state, decayed, initial_state)
        for state, initial_state in zip(sums.unbind(0), initial_states)
    ]
