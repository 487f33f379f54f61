"""Speculative sampling with point-mass drafts: the acceptance rule, as pure functions (FlashVideo's lossless speedup).

A draft is a single token x proposed for a position (here: the code at the same grid cell of a frame already known).
With p the model's distribution at that position after every logits processor (image-code restriction, temperature,
top-k / top-p, guidance), the rule of Leviathan et al. / Chen et al. for a draft distribution q = δ_x is:

- accept x with probability min(1, p(x) / q(x)) = p(x);
- on rejection, sample from the residual (p − q)⁺ normalised, which for q = δ_x is p with x removed, renormalised.

A token so produced is distributed exactly as p: P(x) = p(x) + (1 − p(x)) · 0 and, for y ≠ x,
P(y) = (1 − p(x)) · p(y) / (1 − p(x)) = p(y). Greedy decoding accepts x iff it is the argmax, and the correction is
the argmax, so greedy speculative output is token-identical to greedy decoding.
"""

import torch


def acceptance_probability(draft_probabilities: torch.Tensor) -> torch.Tensor:
    """Probability of accepting each point-mass draft x, given p(x): p(x) itself."""
    return draft_probabilities


def residual_distribution(probabilities: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
    """p with the rejected draft x removed, renormalised (the residual (p − δ_x)⁺ of a point-mass draft).

    `probabilities` `[rows, vocab]`, `drafts` `[rows]`. `torch.multinomial` renormalises, so the zeroed entry suffices.
    """
    return probabilities.scatter(-1, drafts[:, None], 0.0)


def draw_from(probabilities: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One index per row of `probabilities` `[rows, vocab]` (not necessarily normalised), by the inverse CDF: the
    first index whose cumulative probability exceeds `uniforms` `[rows]` (in [0, 1)) times the row's total.

    Distributed exactly as `torch.multinomial(probabilities, 1)`, which costs several times more on a CPU at this
    size; zero-probability entries (a rejected draft, codes outside top-k) are never drawn.
    """
    cumulative = probabilities.cumsum(dim=-1)
    targets = uniforms[:, None] * cumulative[:, -1:]
    return torch.searchsorted(cumulative, targets, right=True)[:, 0].clamp(max=probabilities.shape[-1] - 1)


def verify_drafts(
    scores: torch.Tensor,
    window: torch.Tensor,
    is_draft: torch.Tensor,
    window_lengths: torch.Tensor,
    do_sample: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept the longest prefix of each row's window, then draw the token at the first position not accepted.

    Args:
        scores: `[rows, width + 1, vocab]` processed scores: `scores[:, i]` is the distribution of window position i,
            and `scores[:, width]` that of the position after a window of full width.
        window: `[rows, width]` tokens in the window: drafts, or fixed tokens (which are always accepted).
        is_draft: `[rows, width]` True where the token is a draft to verify, False where it is fixed.
        window_lengths: `[rows]` how many window positions each row uses (the rest is padding).
        do_sample: sample (speculative sampling) or greedy (accept iff argmax).

    Returns:
        `(accepted, next_tokens)`: `[rows]` accepted window positions, and the token for position `accepted` drawn
        from its distribution — from the residual when a draft was rejected there, from p itself after a fully
        accepted window.

    Example:

    ```python
    >>> accepted, next_tokens = verify_drafts(scores, window, is_draft, lengths, do_sample=True, generator=g)
    ```
    """
    rows, width = window.shape
    offsets = torch.arange(width, device=window.device)
    # One uniform per window position for its acceptance, and one for the token drawn after the accepted prefix.
    uniforms = torch.rand(rows, width + 1, generator=generator, device=window.device) if do_sample else None
    if not width:
        verified = torch.zeros(rows, 0, dtype=torch.bool, device=window.device)
    elif do_sample:
        draft_probabilities = torch.softmax(scores[:, :width], dim=-1).gather(-1, window[..., None])[..., 0]
        verified = uniforms[:, :width] < acceptance_probability(draft_probabilities)
    else:
        verified = scores[:, :width].argmax(dim=-1) == window
    accepted_here = (verified | ~is_draft) & (offsets[None, :] < window_lengths[:, None])
    accepted = accepted_here.long().cumprod(dim=1).sum(dim=1)

    stop_scores = scores.gather(1, accepted[:, None, None].expand(-1, 1, scores.shape[-1]))[:, 0]
    if not do_sample:  # a rejected draft is not the argmax, so the argmax is the correction
        return accepted, stop_scores.argmax(dim=-1)
    stop_probabilities = torch.softmax(stop_scores, dim=-1)
    rejected = accepted < window_lengths  # a draft was refused at position `accepted`
    if bool(rejected.any()):
        rejected_drafts = window.gather(1, accepted.clamp(max=width - 1)[:, None])[:, 0]
        stop_probabilities = torch.where(
            rejected[:, None], residual_distribution(stop_probabilities, rejected_drafts), stop_probabilities
        )
    return accepted, draw_from(stop_probabilities, uniforms[:, width])

__all__ = ["acceptance_probability", "draw_from", "residual_distribution", "verify_drafts"]
