"""Redundant-free frame interpolation: which tokens of an in-between frame can be inherited (FlashVideo §3.3).

Between key frames A and B, on the code grid:

- Different tokens: positions where A's and B's codes differ — they must be generated;
- Unstable tokens: positions within `radius` (Chebyshev distance on the grid) of a Different token — generated
  too, for fault tolerance around moving edges;
- Stable tokens: all the others;
- Inheritable tokens: a random subset of the Stable ones, `round(inherit_ratio × |Stable|)` of them, that take
  A's code in every in-between frame instead of being sampled.
"""

from dataclasses import dataclass

import torch


@dataclass
class TokenClasses:
    """Boolean masks `[batch, grid, grid]` of the four classes of positions for a batch of key-frame pairs."""

    different: torch.BoolTensor
    unstable: torch.BoolTensor
    stable: torch.BoolTensor
    inheritable: torch.BoolTensor


def classify_tokens(
    codes_a: torch.LongTensor,
    codes_b: torch.LongTensor,
    inherit_ratio: float = 0.2,
    unstable_radius: int = 1,
    generator: torch.Generator | None = None,
) -> TokenClasses:
    """Classify each code-grid position of the key-frame pairs `(codes_a[i], codes_b[i])`, each `[batch, grid, grid]`.

    Example:

    ```python
    >>> classes = classify_tokens(first_key_frame_codes, second_key_frame_codes, inherit_ratio=0.2)
    >>> fixed_ids = first_key_frame_codes.flatten(1); fixed_mask = classes.inheritable.flatten(1)
    ```
    """
    if codes_a.shape != codes_b.shape or codes_a.dim() != 3:
        raise ValueError(
            f"codes_a and codes_b must both have shape [batch, grid, grid], got {tuple(codes_a.shape)} and "
            f"{tuple(codes_b.shape)}."
        )
    if not 0.0 <= inherit_ratio <= 1.0:
        raise ValueError(f"inherit_ratio must be in [0, 1], got {inherit_ratio}.")
    if unstable_radius < 0:
        raise ValueError(f"unstable_radius must be >= 0, got {unstable_radius}.")

    different = codes_a != codes_b
    if unstable_radius > 0:
        kernel = 2 * unstable_radius + 1
        near_different = torch.nn.functional.max_pool2d(
            different[:, None].float(), kernel_size=kernel, stride=1, padding=unstable_radius
        )[:, 0].bool()
    else:
        near_different = different
    unstable = near_different & ~different
    stable = ~near_different

    inheritable = torch.zeros_like(stable)
    flat_stable, flat_inheritable = stable.flatten(1), inheritable.view(inheritable.shape[0], -1)
    for sample in range(stable.shape[0]):
        candidates = flat_stable[sample].nonzero().squeeze(1)
        count = round(inherit_ratio * candidates.numel())
        if count:
            chosen = torch.randperm(candidates.numel(), generator=generator, device=candidates.device)[:count]
            flat_inheritable[sample, candidates[chosen]] = True
    return TokenClasses(different=different, unstable=unstable, stable=stable, inheritable=inheritable)
