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


def eager_states(model, ids, cache, **kwargs):
    """A call that computes its final states in the layers: the chunkwise form (one block for calls up to
    chunk_size), which keeps doing so."""
    with torch.no_grad():
        return model(ids, cache=cache, use_cache=True, forward_mode="chunkwise", **kwargs).logits


def prefilled_pair(config, ids, prefill=12):
    model = code_position_model(config)
    deferred, eager = RetNetCache(config.num_hidden_layers), RetNetCache(config.num_hidden_layers)
    run(model, ids[:, :prefill], deferred)
    run(model, ids[:, :prefill], eager)
    return model, deferred, eager


@pytest.mark.parametrize("fused", [True, False])
def test_a_deferred_state_read_equals_the_eagerly_computed_one(tiny_config, fused):
    ids = frames_sequence(tiny_config, [16, 6], batch_size=3, seed=3)
    model, deferred, eager = prefilled_pair(tiny_config, ids)
    model.model.fused_inference = fused
    logits = run(model, ids[:, 12:17], deferred)  # 5 tokens, parallel form: final states left to the cache
    record = deferred.records[-1]
    assert deferred._deferred is record and all(state is None for state in deferred._states)
    assert deferred.batch_size == 3 and deferred.is_initialized and record.length == 5  # read without computing
    assert deferred._deferred is record
    expected_logits = eager_states(model, ids[:, 12:17], eager)
    assert (logits - expected_logits).abs().max() < 1e-12
    assert deferred.nbytes == eager.nbytes  # reading them computes them
    assert deferred._deferred is None
    for state, expected in zip(deferred.states, eager.states):
        assert (state - expected).abs().max() <= 1e-12
    # the parallel form's own final-state formula on the recorded keys and values
    for layer, state in enumerate(deferred.states):
        k, v = record.keys[layer], record.values[layer]
        _, final = parallel_retention(k, k, v, record.log_decay, record.states[layer])
        assert (state - final).abs().max() <= 1e-12
    # and the next call reads them as its past states
    assert (run(model, ids[:, 17:18], deferred) - run(model, ids[:, 17:18], eager)).abs().max() < 1e-12


def test_a_deferred_call_with_per_row_positions_has_the_full_call_length_of_slots(tiny_config):
    ids = frames_sequence(tiny_config, [16, 10], batch_size=3, seed=4)
    model, deferred, eager = prefilled_pair(tiny_config, ids)
    for cache, call in ((deferred, run), (eager, eager_states)):
        call(model, ids[:, 12:17], cache)
        cache.rewind(torch.tensor([1, 5, 3]))  # rows now stand apart
        call(model, ids[:, 17:21], cache)
    assert deferred._deferred is deferred.records[-1]
    assert deferred.row_positions.tolist() == eager.row_positions.tolist() == [17, 21, 19]
    assert_same_cache(deferred, eager)


@pytest.mark.parametrize("kept", [0, 2, 5, [1, 5, 0], [3, 3, 3]])
def test_rewind_after_a_deferred_call_equals_rewind_after_an_eager_one(tiny_config, kept):
    ids = frames_sequence(tiny_config, [16, 6], batch_size=3, seed=3)
    model, deferred, eager = prefilled_pair(tiny_config, ids)
    run(model, ids[:, 12:17], deferred)
    eager_states(model, ids[:, 12:17], eager)
    kept = torch.tensor(kept) if isinstance(kept, list) else kept
    deferred.rewind(kept)
    eager.rewind(kept)
    assert deferred._deferred is None
    assert_same_cache(deferred, eager)
    assert deferred.row_positions is None if eager.row_positions is None else torch.equal(
        deferred.row_positions, eager.row_positions
    )
    assert (run(model, ids[:, 17:19], deferred) - run(model, ids[:, 17:19], eager)).abs().max() < 1e-12


def test_crop_and_reorder_after_a_deferred_call(tiny_config):
    ids = frames_sequence(tiny_config, [16, 6], batch_size=3, seed=3)
    model, deferred, eager = prefilled_pair(tiny_config, ids)
    run(model, ids[:, 12:17], deferred)
    eager_states(model, ids[:, 12:17], eager)
    deferred.crop(0)  # nothing to remove: the states stay deferred
    assert deferred._deferred is not None
    for cache in (deferred, eager):
        cache.crop(-2)
    assert_same_cache(deferred, eager)
    # a crop that removes the whole deferred call goes back to the states before it
    run(model, ids[:, 15:20], deferred)
    deferred.crop(-5)
    assert_same_cache(deferred, eager)
    run(model, ids[:, 15:20], deferred)
    eager_states(model, ids[:, 15:20], eager)
    for cache in (deferred, eager):
        cache.reorder_cache(torch.tensor([2, 0, 0]))
    assert_same_cache(deferred, eager)
    assert deferred.records == []
    run(model, ids[:, 15:20], deferred)
    eager_states(model, ids[:, 15:20], eager)
    for cache in (deferred, eager):
        cache.batch_select_indices(torch.tensor([1]))
    assert deferred.batch_size == 1
    assert_same_cache(deferred, eager)


@pytest.mark.parametrize("assisted", [False, True])
def test_generate_gives_the_same_tokens_with_deferred_final_states(tiny_config, monkeypatch, assisted):
    model = code_position_model(tiny_config)
    prompt = frames_sequence(tiny_config, [3], batch_size=1)  # 7 tokens: a parallel-form prefill
    if assisted:  # repetitive, so that prompt lookup finds drafts: verify calls of several tokens, then crops
        prompt = prompt.repeat(1, 2)
    kwargs = dict(max_new_tokens=16, do_sample=False, eos_token_id=None, attention_mask=torch.ones_like(prompt))
    if assisted:
        kwargs["prompt_lookup_num_tokens"] = 3
    deferred_calls = []
    update = RetNetCache.update

    def counting_update(self, states, *args):
        deferred_calls.append(states is None)
        update(self, states, *args)

    monkeypatch.setattr(RetNetCache, "update", counting_update)
    deferred = model.generate(prompt, **kwargs)
    assert any(deferred_calls)
    # The reference computes every final state in the layers: multi-token calls in the chunkwise form.
    original = type(model.model)._resolve_forward_mode
    monkeypatch.setattr(
        type(model.model), "_resolve_forward_mode",
        lambda self, mode, length: "chunkwise" if length > 1 else original(self, mode, length),
    )  # fmt: skip
    deferred_calls.clear()
    assert torch.equal(deferred, model.generate(prompt, **kwargs))
    assert not any(deferred_calls)


def rewound(model, ids, kept, prefix_decays=True):
    cache = RetNetCache(model.config.num_hidden_layers)
    run(model, ids[:, :12], cache)
    run(model, ids[:, 12:17], cache)
    if not prefix_decays:
        cache.records[-1].prefix_decays = None  # the rows computed in rewind, as for calls too long to keep them
    cache.rewind(kept)
    return cache


def test_rewind_takes_an_int_a_list_or_a_tensor(tiny_config):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [16, 6], batch_size=3, seed=3)
    uniform = rewound(model, ids, 2)
    assert uniform.records[-1].prefix_decays is not None  # the model keeps the table for short calls
    for same in ([2, 2, 2], torch.tensor([2, 2, 2]), (2, 2, 2)):
        cache = rewound(model, ids, same)
        assert cache.row_positions is None and cache.records[-1].length == 2
        assert_same_cache(cache, uniform)
    per_row = rewound(model, ids, torch.tensor([1, 5, 0]))
    for same in ([1, 5, 0], torch.tensor([1, 5, 0], dtype=torch.int32)):
        cache = rewound(model, ids, same)
        assert torch.equal(cache.row_positions, per_row.row_positions)
        assert_same_cache(cache, per_row)
    # the kept table of decay factors gives what computing them in rewind gives
    for kept in (2, [1, 5, 0], 0, 5):
        assert_same_cache(rewound(model, ids, kept), rewound(model, ids, kept, prefix_decays=False))
    cache = rewound(model, ids, 5)
    for bad in ([1, 2], [1, 2, 6], [-1, 0, 0], torch.tensor([[1, 2, 3]]), torch.tensor(2), ["a", 1, 2]):
        with pytest.raises(ValueError, match=r"kept must hold one count per row \(3\) in \[0, 5\]"):
            cache.rewind(bad)
    with pytest.raises(ValueError, match=r"kept must be in \[0, 5\]"):
        cache.rewind(6)
