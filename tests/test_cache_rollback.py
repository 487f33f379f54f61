"""RetNetCache rolls back inside its recorded calls exactly: `rewind` (per row) and `crop` (transformers' way)."""

import pytest
import torch

from flashvideo import RetNetCache
from flashvideo.retention import parallel_retention, retention_state_at

from test_modeling import code_position_model, frames_sequence


def run(model, ids, cache):
    with torch.no_grad():
        return model(ids, cache=cache, use_cache=True).logits


def assert_same_cache(cache, reference):
    assert cache.get_seq_length() == reference.get_seq_length()
    for state, expected in zip(cache.states, reference.states):
        assert (state - expected).abs().max() < 1e-10
    assert torch.equal(cache.frame_places, reference.frame_places)


def test_state_at_a_prefix_is_the_state_of_the_prefix():
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(3, 2, 7, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    v = torch.randn(3, 2, 7, 5, generator=generator, dtype=torch.float64)
    start = torch.randn(3, 2, 4, 5, generator=generator, dtype=torch.float64)
    log_decay = torch.tensor([-0.1, -0.5], dtype=torch.float64)
    lengths = torch.tensor([0, 4, 7])
    rebuilt = retention_state_at(k, v, log_decay, lengths, start)
    for row, length in enumerate(lengths.tolist()):
        _, expected = parallel_retention(q[row : row + 1, :, :length], k[row : row + 1, :, :length],
                                         v[row : row + 1, :, :length], log_decay, start[row : row + 1])  # fmt: skip
        assert (rebuilt[row] - expected[0]).abs().max() < 1e-12


@pytest.mark.parametrize("kept", [0, 1, 5, 8])
def test_rewind_inside_the_last_call_equals_feeding_only_the_prefix(tiny_config, kept):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [16, 6], batch_size=2)  # the rewound call crosses a serial number
    cache, reference = RetNetCache(tiny_config.num_hidden_layers), RetNetCache(tiny_config.num_hidden_layers)
    run(model, ids[:, :16], cache)
    run(model, ids[:, 16:24], cache)
    run(model, ids[:, : 16 + kept], reference)
    cache.rewind(kept)
    assert_same_cache(cache, reference)
    assert cache.row_positions is None
    # and the next call continues as if the rest had never been fed
    assert (run(model, ids[:, 24:], cache) - run(model, ids[:, 24:], reference)).abs().max() < 1e-10


def test_rows_rewound_by_different_amounts_continue_like_separate_sequences(tiny_config):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [16, 10], batch_size=3, seed=2)
    cache = RetNetCache(tiny_config.num_hidden_layers)
    run(model, ids[:, :12], cache)
    run(model, ids[:, 12:20], cache)
    kept = torch.tensor([2, 8, 0])
    cache.rewind(kept)
    assert cache.row_positions.tolist() == [14, 20, 12]
    # Every row then takes the tokens that follow its own prefix.
    following = torch.stack([ids[row, 12 + n : 12 + n + 5] for row, n in enumerate(kept.tolist())])
    together = run(model, following, cache)
    for row, n in enumerate(kept.tolist()):
        alone = RetNetCache(tiny_config.num_hidden_layers)
        expected = run(model, torch.cat([ids[row : row + 1, : 12 + n], following[row : row + 1]], dim=1), alone)
        assert (together[row] - expected[0, -5:]).abs().max() < 1e-10
        assert cache.frame_places[row] == alone.frame_places[0]


def test_crop_removes_tokens_across_recorded_calls(tiny_config):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [12], batch_size=1)
    cache = RetNetCache(tiny_config.num_hidden_layers)
    run(model, ids[:, :6], cache)
    for n in range(6, 10):  # four one-token steps, as an assistant model drafts
        run(model, ids[:, n : n + 1], cache)
    cache.crop(-5)  # back into the prefill
    reference = RetNetCache(tiny_config.num_hidden_layers)
    run(model, ids[:, :5], reference)
    assert_same_cache(cache, reference)
    cache.crop(-2)  # and further back inside it
    reference = RetNetCache(tiny_config.num_hidden_layers)
    run(model, ids[:, :3], reference)
    assert_same_cache(cache, reference)
    cache.crop(0)
    assert cache.get_seq_length() == 3


def test_crop_beyond_the_recorded_calls_is_refused(tiny_config):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [12], batch_size=1)
    cache = RetNetCache(tiny_config.num_hidden_layers, max_rollback_tokens=4)
    run(model, ids[:, :6], cache)
    for n in range(6, 12):
        run(model, ids[:, n : n + 1], cache)
    assert cache.rollback_tokens == 4
    with pytest.raises(ValueError, match=r"roll back over its last 4 tokens \(to a length in \[8, 12\]\)"):
        cache.crop(-5)
    with pytest.raises(ValueError, match="kept must be in"):
        cache.rewind(2)
    with pytest.raises(ValueError, match="max_rollback_tokens"):
        RetNetCache(2, max_rollback_tokens=-1)
    cache.crop(-4)
    assert cache.get_seq_length() == 8
