"""training.changing_codes: the loss weight on the cells where a sample's frames differ."""

import pytest
import torch

from flashvideo.training.changing_codes import changing_code_weights, weighted_next_token_loss


def test_weights_mark_the_cells_that_change_in_any_frame():
    # Three frames of four cells, each after a two-token prefix; cell 1 changes in frame 2 only, cell 3 in frame 3.
    frames = [[7, 7, 9, 4], [7, 8, 9, 4], [7, 7, 9, 5]]
    labels = torch.tensor([sum(([-100, -100] + frame for frame in frames), []) + [-100]])  # padded at the end
    weights = changing_code_weights(labels, tokens_per_frame=4, weight=3.0)
    per_frame = [0, 0, 1, 3, 1, 3]
    assert weights[0].tolist() == per_frame * 3 + [0]


def test_weight_one_gives_the_models_own_loss(tiny_model, tiny_processor, tiny_config):
    grid = tiny_config.code_grid_size
    codes = torch.randint(
        0, tiny_config.image_vocab_size, (3, grid, grid), generator=torch.Generator().manual_seed(0)
    )
    codes[:, : grid // 2] = 0  # a still top half, so that the weights are not all equal
    sample = tiny_processor.build_keyframe_sample("a red circle moving right", codes)
    ids, labels = torch.tensor([sample["input_ids"]]), torch.tensor([sample["labels"]])
    with torch.no_grad():
        output = tiny_model(input_ids=ids, labels=labels)
        plain = weighted_next_token_loss(output.logits, labels, changing_code_weights(labels, grid * grid, 1.0))
        weighted = weighted_next_token_loss(output.logits, labels, changing_code_weights(labels, grid * grid, 5.0))
    assert plain.item() == pytest.approx(output.loss.item(), rel=1e-6)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-4)


def test_labels_that_are_not_whole_frames_are_refused():
    with pytest.raises(ValueError, match="labels row 0 holds 5 labelled positions, not whole frames"):
        changing_code_weights(torch.tensor([[-100, 1, 2, 3, 4, 5]]), tokens_per_frame=4, weight=2.0)
