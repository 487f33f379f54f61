"""
A next-token loss that weighs the cells where the video changes: the moving object's, in the Shapes clips.

Most of a frame is still background that every frame of a sample repeats, and a model predicts it almost for free;
in the plain mean over image codes the few cells where the object is, was or will be are a small share of the loss
(a 12-px object covers about 9 of 256 cells), although where they go is all the motion there is. Weighting the
codes of every cell that is not the same in all of a sample's frames by `weight` (the others by 1) points the
training at them (`--changing_code_loss_weight`).

Example:

```python
>>> import torch
>>> from flashvideo.training.changing_codes import changing_code_weights
>>> labels = torch.tensor([[-100, 5, 7, -100, 5, 8]])  # two frames of two codes, each after a one-token prefix
>>> changing_code_weights(labels, tokens_per_frame=2, weight=4.0)
tensor([[0., 1., 4., 0., 1., 4.]])
```
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..processing_flashvideo import IGNORE_INDEX


def changing_code_weights(labels: torch.LongTensor, tokens_per_frame: int, weight: float) -> torch.Tensor:
    """
    Per-position loss weights for `labels` `[batch, length]`: 0 where the label is -100, `weight` on the codes of
    a cell whose code is not the same in every labelled frame of the sample, 1 on the others.

    A sample's labelled positions are its frames' codes, `tokens_per_frame` per frame, in order (the processor's
    key-frame and interpolation samples; padding is -100). A sample whose labelled positions are not whole frames
    is refused, since its cells cannot be told apart.
    """
    weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for row, row_labels in enumerate(labels):
        labelled = row_labels != IGNORE_INDEX
        codes = row_labels[labelled]
        if codes.numel() % tokens_per_frame:
            raise ValueError(
                f"labels row {row} holds {codes.numel()} labelled positions, not whole frames of tokens_per_frame "
                f"= {tokens_per_frame}: the changing-code weight needs the processor's samples."
            )
        frames = codes.view(-1, tokens_per_frame)
        changing = (frames != frames[:1]).any(dim=0)  # the cells not the same in every frame
        weights[row, labelled] = torch.where(changing, weight, 1.0).repeat(frames.shape[0])
    return weights


def weighted_next_token_loss(logits: torch.Tensor, labels: torch.LongTensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the next-token cross-entropy: position t's logits predict `labels[:, t + 1]`, weighted
    by `weights[:, t + 1]` (0 where the label is -100). With weights 1 on every label it is the model's own loss."""
    losses = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    target_weights = weights[:, 1:].flatten()
    return (losses * target_weights).sum() / target_weights.sum().clamp_min(1e-12)
