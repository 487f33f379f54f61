"""The RetNet model: the three retention forms, the cache, losses and outputs, bad input."""

import pytest
import torch

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoModel, RetNetCache
from flashvideo.retention import (
    chunkwise_retention,
    parallel_retention,
    recurrent_retention,
    retention_log_decay,
    rotate_every_two,
    rotation_angles,
)


def float64_model(config, **overrides):
    torch.manual_seed(0)
    config = FlashVideoConfig(**{**config.to_dict(), **overrides})
    return FlashVideoForCausalLM(config).double().eval()


def logits(model, ids, mode, **kwargs):
    with torch.no_grad():
        return model(ids, forward_mode=mode, use_cache=False, **kwargs).logits


def test_decay_and_angles_match_the_design():
    assert torch.allclose(retention_log_decay(3).exp(), torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7], dtype=torch.float64))
    angles = rotation_angles(8)
    theta = 10000.0 ** -(torch.arange(4, dtype=torch.float64) / 3)
    assert torch.allclose(angles, theta.repeat_interleave(2))
    assert rotate_every_two(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-2.0, 1.0, -4.0, 3.0]


def test_decay_and_angles_survive_a_cast_to_half_precision(tiny_config):
    reference = FlashVideoForCausalLM(tiny_config).model.positions
    for cast in (torch.nn.Module.half, torch.nn.Module.bfloat16):
        positions = cast(FlashVideoForCausalLM(tiny_config)).model.positions
        assert positions.log_decay.dtype == positions.angles.dtype == torch.float32
        assert torch.equal(positions.log_decay, reference.log_decay)
        assert torch.equal(positions.angles, reference.angles)
    exact = FlashVideoForCausalLM(tiny_config).double().model.positions
    assert torch.equal(exact.log_decay, retention_log_decay(tiny_config.num_attention_heads))


def test_decay_exponents_set_the_decay_and_survive_save_and_load(tiny_config, tmp_path):
    exponents = [5.0, 9.5, 12.0, 20.0]  # tiny_config has 4 heads
    model = FlashVideoForCausalLM(FlashVideoConfig(**{**tiny_config.to_dict(), "decay_exponents": exponents}))
    expected = torch.log1p(-(2.0 ** -torch.tensor(exponents, dtype=torch.float64))).float()
    assert torch.equal(model.model.positions.log_decay, expected)
    model.save_pretrained(tmp_path)
    loaded = FlashVideoForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.decay_exponents == exponents
    assert torch.equal(loaded.model.positions.log_decay, expected)  # a non-persistent buffer, rebuilt on load
    # Fine-tuning with another decay: same weights, the new decay.
    retuned = FlashVideoForCausalLM.from_pretrained(tmp_path, decay_exponents=None)
    assert torch.equal(retuned.model.positions.log_decay, retention_log_decay(tiny_config.num_attention_heads).float())
    with pytest.raises(ValueError, match="one number per head"):
        retention_log_decay(2, [5.0])


@pytest.mark.parametrize("length", [16, 21])  # a multiple of chunk_size=8 and one that is not
@pytest.mark.parametrize("decay_exponents", [None, "slow"])
def test_parallel_recurrent_chunkwise_agree(tiny_config, length, decay_exponents):
    if decay_exponents == "slow":  # slower decays than RetNet's: longer memory, larger row sums
        decay_exponents = [8.0 + 3 * h for h in range(tiny_config.num_attention_heads)]
    model = float64_model(tiny_config, rms_norm_eps=1e-15, decay_exponents=decay_exponents)
    ids = torch.randint(3, tiny_config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    parallel, recurrent, chunkwise = (logits(model, ids, mode) for mode in ("parallel", "recurrent", "chunkwise"))
    assert (parallel - recurrent).abs().max() <= 1e-9
    assert (chunkwise - parallel).abs().max() <= 1e-6


def test_left_padded_batch_gives_each_unpadded_result(tiny_config):
    model = float64_model(tiny_config)
    generator = torch.Generator().manual_seed(2)
    short, long = torch.randint(3, 90, (1, 7), generator=generator), torch.randint(3, 90, (1, 12), generator=generator)
    pad = tiny_config.pad_token_id
    batch = torch.cat([torch.cat([torch.full((1, 5), pad), short], dim=1), long])
    mask = torch.ones_like(batch)
    mask[0, :5] = 0
    for mode in ("parallel", "chunkwise", "recurrent"):
        batched = logits(model, batch, mode, attention_mask=mask)
        assert (batched[0, 5:] - logits(model, short, mode)[0]).abs().max() < 1e-10
        assert (batched[1] - logits(model, long, mode)[0]).abs().max() < 1e-10


@pytest.mark.parametrize("prefill_mode", ["parallel", "chunkwise"])
def test_prefill_leaves_the_recurrent_state(tiny_config, prefill_mode):
    model = float64_model(tiny_config)
    ids = torch.randint(3, 90, (2, 19), generator=torch.Generator().manual_seed(3))
    prefilled, stepped = RetNetCache(tiny_config.num_hidden_layers), RetNetCache(tiny_config.num_hidden_layers)
    with torch.no_grad():
        model(ids, cache=prefilled, use_cache=True, forward_mode=prefill_mode)
        for n in range(ids.shape[1]):
            model(ids[:, n : n + 1], cache=stepped, use_cache=True)
        # and the next token sees the same thing from either cache
        nxt = torch.tensor([[5], [6]])
        from_prefill = model(nxt, cache=prefilled, use_cache=True).logits
        from_steps = model(nxt, cache=stepped, use_cache=True).logits
    assert prefilled.get_seq_length() == stepped.get_seq_length() == 20
    for a, b in zip(prefilled.states, stepped.states):
        assert (a - b).abs().max() < 1e-10
    assert (from_prefill - from_steps).abs().max() < 1e-10


def test_prefill_continuing_from_a_cache_matches_one_pass(tiny_config):
    model = float64_model(tiny_config)
    ids = torch.randint(3, 90, (1, 30), generator=torch.Generator().manual_seed(4))
    cache = RetNetCache(tiny_config.num_hidden_layers)
    with torch.no_grad():
        first = model(ids[:, :13], cache=cache, use_cache=True).logits
        second = model(ids[:, 13:], cache=cache, use_cache=True, forward_mode="chunkwise").logits
    whole = logits(model, ids, "parallel")
    assert (torch.cat([first, second], dim=1) - whole).abs().max() < 1e-10


def test_cache_memory_does_not_grow(tiny_model, tiny_config):
    cache = RetNetCache(tiny_config.num_hidden_layers)
    token = torch.tensor([[7]])
    with torch.no_grad():
        for n in range(3000):
            tiny_model(token, cache=cache, use_cache=True)
            if n + 1 == 100:
                bytes_at_100 = cache.nbytes
    assert cache.get_seq_length() == 3000
    assert cache.nbytes == bytes_at_100 > 0


def test_loss_ignores_minus_100_and_matches_cross_entropy(tiny_model):
    ids = torch.randint(3, 90, (2, 10), generator=torch.Generator().manual_seed(5))
    labels = ids.clone()
    labels[:, :4] = -100
    out = tiny_model(ids, labels=labels)
    shifted_logits, shifted_labels = out.logits[:, :-1], labels[:, 1:]
    expected = torch.nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1), ignore_index=-100
    )
    assert torch.allclose(out.loss, expected)
    # changing a label that is -100 after shifting changes nothing
    labels_only_text = labels.clone()
    labels_only_text[:, 0] = 5
    assert torch.allclose(tiny_model(ids, labels=labels_only_text).loss, out.loss)


def test_hidden_states_and_tuple_outputs(tiny_model, tiny_config):
    ids = torch.randint(3, 90, (1, 6))
    out = tiny_model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    as_tuple = tiny_model(ids, labels=ids, return_dict=False, use_cache=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].ndim == 0 and as_tuple[1].shape == (1, 6, tiny_config.vocab_size)
    base = FlashVideoModel(tiny_config)
    assert base(ids).last_hidden_state.shape == (1, 6, tiny_config.hidden_size)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    ids = torch.randint(3, 90, (2, 12))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = FlashVideoForCausalLM(tiny_config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        model(ids, labels=ids, forward_mode="chunkwise").loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_input_gets_a_clear_error(tiny_model, tiny_config):
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, "):
        tiny_model(torch.tensor([[1, tiny_config.vocab_size]]))
    with pytest.raises(ValueError, match=r"input_ids must be in"):
        tiny_model(torch.tensor([[-1, 4]]))
    with pytest.raises(ValueError, match="integer tensor"):
        tiny_model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="forward_mode"):
        tiny_model(torch.tensor([[1, 2]]), forward_mode="sideways")
    cache = RetNetCache(tiny_config.num_hidden_layers)
    tiny_model(torch.tensor([[4, 5], [6, 7]]), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="batch size 2"):
        tiny_model(torch.tensor([[4]]), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="RetNetCache"):
        from transformers import DynamicCache

        tiny_model(torch.tensor([[4]]), cache=DynamicCache(), use_cache=True)
    with pytest.raises(ValueError, match="attention_mask"):
        tiny_model(torch.tensor([[4, 5]]), attention_mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="roll back over its last 2 tokens"):
        cache.crop(-3)
    cache.crop(0)


def test_cache_reorder_and_reset(tiny_model, tiny_config):
    cache = RetNetCache(tiny_config.num_hidden_layers)
    tiny_model(torch.tensor([[4, 5], [6, 7], [8, 9]]), cache=cache, use_cache=True)
    before = [state.clone() for state in cache.states]
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    assert torch.equal(cache.states[0][0], before[0][2]) and torch.equal(cache.states[1][2], before[1][0])
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.nbytes == 0 and cache.batch_size == -1


def frames_sequence(config, lengths, batch_size=1, seed=5):
    """`[caption (3 tokens)][SN_1][codes]…`: one frame per entry of `lengths` (codes in that frame)."""
    generator = torch.Generator().manual_seed(seed)
    parts = [torch.randint(*config.text_token_range, (batch_size, 3), generator=generator)]
    for number, length in enumerate(lengths, start=1):
        parts.append(torch.full((batch_size, 1), config.serial_token_id(number)))
        parts.append(torch.randint(*config.image_token_range, (batch_size, length), generator=generator))
    return torch.cat(parts, dim=1)


def code_position_model(config):
    """A float64 model with code position embeddings set to random values (they start at zero)."""
    model = float64_model(config, code_position_embeddings=True)
    with torch.no_grad():
        model.model.code_positions.weight.normal_(generator=torch.Generator().manual_seed(6))
    return model


def test_code_positions_count_from_the_latest_serial_number(tiny_config):
    model = code_position_model(tiny_config)  # 4×4 grid: 16 codes per frame
    code_positions = model.model.code_positions
    ids = frames_sequence(tiny_config, [16, 3])
    caption, frame = [-1, -1, -1], list(range(17))
    assert code_positions.places(ids, None)[0].tolist() == caption + frame + [0, 1, 2, 3]
    # A call continuing a frame counts on from the place its cache carries.
    assert code_positions.places(ids[:, 10:], torch.tensor([6]))[0].tolist() == list(range(7, 17)) + [0, 1, 2, 3]
    assert code_positions.places(ids[:, :2], torch.tensor([-1]))[0].tolist() == [-1, -1]
    # One embedding per place 0…16; none for the caption, nor past the end of a frame.
    embeddings = code_positions(torch.tensor([[-1, 0, 16, 17]]))
    assert torch.equal(embeddings[0, 1], code_positions.weight[0])
    assert torch.equal(embeddings[0, 2], code_positions.weight[16])
    assert not embeddings[0, 0].any() and not embeddings[0, 3].any()


def test_code_positions_agree_across_forms_and_split_calls(tiny_config):
    model = code_position_model(tiny_config)
    ids = frames_sequence(tiny_config, [16, 16, 5], batch_size=2)  # 42 tokens: several chunks of 8
    parallel, recurrent, chunkwise = (logits(model, ids, mode) for mode in ("parallel", "recurrent", "chunkwise"))
    assert (parallel - recurrent).abs().max() <= 1e-9
    assert (chunkwise - parallel).abs().max() <= 1e-6
    # The embeddings change the outputs (and so are in use), and a cache carries each row's place: a prefill
    # that stops inside a frame, then token-by-token steps, gives the one-pass result.
    without = float64_model(tiny_config)
    assert (logits(without, ids, "parallel") - parallel).abs().max() > 1e-3
    for prefill_length in (2, 11):  # inside the caption (no place yet), inside the first frame
        cache = RetNetCache(tiny_config.num_hidden_layers)
        with torch.no_grad():
            pieces = [model(ids[:, :prefill_length], cache=cache, use_cache=True).logits]
            pieces += [
                model(ids[:, n : n + 1], cache=cache, use_cache=True).logits
                for n in range(prefill_length, ids.shape[1])
            ]
        assert cache.frame_places.tolist() == [5, 5]
        assert (torch.cat(pieces, dim=1) - parallel).abs().max() < 1e-10


def test_code_positions_follow_reordered_and_selected_cache_rows(tiny_config):
    model = code_position_model(tiny_config)
    cache = RetNetCache(tiny_config.num_hidden_layers)
    ids = frames_sequence(tiny_config, [4], batch_size=3)
    ids[1, 4:] = tiny_config.serial_token_id(2)  # rows at places 4, 0 and 4
    ids[2, 3:] = tiny_config.text_token_start  # and no serial number
    model(ids, cache=cache, use_cache=True)
    assert cache.frame_places.tolist() == [4, 0, -1]
    cache.reorder_cache(torch.tensor([2, 0, 1]))
    assert cache.frame_places.tolist() == [-1, 4, 0]
    cache.batch_repeat_interleave(2)
    assert cache.frame_places.tolist() == [-1, -1, 4, 4, 0, 0]
    cache.batch_select_indices(torch.tensor([1, 4]))
    assert cache.frame_places.tolist() == [-1, 0]
    cache.reset()
    assert cache.frame_places is None


def test_generate_with_code_positions_same_with_and_without_cache(tiny_config):
    model = code_position_model(tiny_config)
    prompt = frames_sequence(tiny_config, [2], batch_size=2)
    kwargs = dict(max_new_tokens=20, eos_token_id=None, attention_mask=torch.ones_like(prompt))
    for strategy in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        cached = model.generate(prompt, **strategy, **kwargs)
        assert torch.equal(cached, model.generate(prompt, use_cache=False, **strategy, **kwargs))


def test_code_positions_start_at_zero_and_learn(tiny_config, tmp_path):
    """Switched on for a trained model, the new table starts at zero (same outputs), and training moves it."""
    trained = float64_model(tiny_config)
    trained.save_pretrained(tmp_path)
    config = FlashVideoConfig(**{**tiny_config.to_dict(), "code_position_embeddings": True})
    extended = FlashVideoForCausalLM.from_pretrained(tmp_path, config=config).double()
    assert not extended.model.code_positions.weight.any()
    ids = frames_sequence(tiny_config, [16, 4])
    reloaded_without = FlashVideoForCausalLM.from_pretrained(tmp_path).double().eval()  # the same loading path
    assert torch.equal(logits(extended.eval(), ids, "parallel"), logits(reloaded_without, ids, "parallel"))
    extended(ids, labels=ids).loss.backward()
    gradient = extended.model.code_positions.weight.grad
    assert gradient[:16].abs().sum(dim=1).min() > 0  # places 0…15 precede a code in this sequence
    with pytest.raises(ValueError, match="input_ids rather than inputs_embeds"):
        extended(inputs_embeds=torch.zeros(1, 3, tiny_config.hidden_size, dtype=torch.float64))
    extended.save_pretrained(tmp_path / "extended")
    reloaded = FlashVideoForCausalLM.from_pretrained(tmp_path / "extended").double()
    assert reloaded.config.code_position_embeddings
    assert torch.equal(reloaded.model.code_positions.weight, extended.model.code_positions.weight)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_retention_functions_take_a_scale_and_may_skip_the_final_state(form):
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 7, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, 7, 5, generator=generator, dtype=torch.float64)
    state = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    log_decay = retention_log_decay(3)
    run = {
        "parallel": lambda q, **kw: parallel_retention(q, k, v, log_decay, state, **kw),
        "chunkwise": lambda q, **kw: chunkwise_retention(q, k, v, log_decay, 3, state, **kw),
        "recurrent": lambda q, **kw: recurrent_retention(q, k, v, log_decay, state, **kw),
    }[form]
    output, final_state = run(q)
    scaled, scaled_state = run(q, scale=0.25)
    torch.testing.assert_close(scaled, run(0.25 * q)[0])
    torch.testing.assert_close(scaled_state, final_state)  # the scale is on the queries: the state is the same
    without_state, none = run(q, output_final_state=False)
    assert none is None
    torch.testing.assert_close(without_state, output)
