"""Inference through `fused_layers.py` (the layer stack as one function over the weights) computes what the modules
compute, and the model falls back to its modules whenever that would no longer be true (training, hooks, a replaced
projection, hidden states asked for)."""

import copy

import pytest
import torch
from torch import nn

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, RetNetCache
from flashvideo.fused_layers import FusedDecoder


@pytest.fixture
def model(float64_code_position_model):
    return float64_code_position_model


def prompt(model, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    start, end = model.config.serial_token_range
    ids = torch.randint(model.config.image_token_start, model.config.vocab_size, (batch, length), generator=generator)
    if length > 3:
        ids[:, 3] = start  # a serial number inside, so that code places are exercised
    return ids


def calls(model, prefix: torch.Tensor, continuations: list[torch.Tensor], fused: bool, **prefill_kwargs):
    """Logits of a prefix and then of each continuation, fed from the cache; and the final cache."""
    model.model.fused_inference = fused
    cache = RetNetCache(model.config.num_hidden_layers)
    logits = [model(prefix, cache=cache, use_cache=True, **prefill_kwargs).logits]
    for ids in continuations:
        logits.append(model(ids, cache=cache, use_cache=True).logits)
    model.model.fused_inference = True
    return logits, cache


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("length", [1, 5])
def test_fused_calls_match_the_modules(model, batch, length):
    prefix = prompt(model, batch, 7)
    continuations = [prompt(model, batch, length, seed=seed + 1) for seed in range(3)]
    with torch.inference_mode():
        reference, reference_cache = calls(model, prefix, continuations, fused=False)
        fused, fused_cache = calls(model, prefix, continuations, fused=True)
    assert isinstance(model.model._fused_decoder, FusedDecoder)  # the fused path was taken
    for expected, actual in zip(reference, fused):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)
    for expected, actual in zip(reference_cache.states, fused_cache.states):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(fused_cache.frame_places, reference_cache.frame_places)


def test_fused_calls_match_with_padding_and_per_row_positions(model):
    prefix = prompt(model, 2, 9)
    mask = torch.ones_like(prefix)
    mask[0, :3] = 0  # row 0 left-padded
    drafts = prompt(model, 2, 4, seed=5)
    with torch.inference_mode():
        results = []
        for fused in (False, True):
            model.model.fused_inference = fused
            cache = RetNetCache(model.config.num_hidden_layers)
            first = model(prefix, attention_mask=mask, cache=cache, use_cache=True).logits
            model(drafts, cache=cache, use_cache=True)
            cache.rewind(torch.tensor([1, 3]))  # rows now stand at different positions
            after = model(prompt(model, 2, 2, seed=6), cache=cache, use_cache=True).logits
            step = model(prompt(model, 2, 1, seed=7), cache=cache, use_cache=True).logits
            results.append((first, after, step, cache.states))
        model.model.fused_inference = True
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)


def test_float32_fused_step_is_within_rounding_of_the_modules(model):
    model = model.float()
    prefix = prompt(model, 2, 7)
    with torch.inference_mode():
        reference, _ = calls(model, prefix, [prompt(model, 2, 1, seed=1)], fused=False)
        fused, _ = calls(model, prefix, [prompt(model, 2, 1, seed=1)], fused=True)
    torch.testing.assert_close(fused[-1], reference[-1], rtol=1e-5, atol=1e-5)


def test_generate_gives_the_same_tokens_either_way(model):
    ids = prompt(model, 2, 6)
    outputs = []
    for fused in (False, True):
        model.model.fused_inference = fused
        outputs.append(model.generate(ids, max_new_tokens=12, do_sample=False))
    model.model.fused_inference = True
    assert torch.equal(outputs[0], outputs[1])


def test_a_hook_or_a_replaced_projection_takes_the_module_path(model):
    ids, step = prompt(model, 1, 6), prompt(model, 1, 1, seed=3)
    with torch.inference_mode():
        model(ids)  # the fused decoder is built
        assert isinstance(model.model._fused_decoder, FusedDecoder)

        seen = []
        handle = model.model.layers[1].ffn.register_forward_hook(lambda module, args, output: seen.append(output))
        model(step, cache=RetNetCache(model.config.num_hidden_layers), use_cache=True)
        handle.remove()
        assert len(seen) == 1  # the hook ran: the modules were called

        # accelerate's hooks replace a module's forward instead of registering one: a decoder layer's too.
        from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

        class Counting(ModelHook):
            def pre_forward(self, module, *args, **kwargs):
                seen.append(module)
                return args, kwargs

        layer = model.model.layers[0]
        add_hook_to_module(layer, Counting())
        model(step, cache=RetNetCache(model.config.num_hidden_layers), use_cache=True)
        assert seen[-1] is layer
        remove_hook_from_module(layer)
        model(ids)
        assert not model.model._fused_decoder.hooked()  # the layer's own forward, put back, is no hook
        assert len(seen) == 2

        class LowRankAdapted(nn.Module):  # what an adapter does: wrap the projection and add to it
            def __init__(self, base: nn.Linear):
                super().__init__()
                self.base = base
                self.delta = nn.Linear(base.in_features, base.out_features, bias=False, dtype=base.weight.dtype)

            def forward(self, x):
                return self.base(x) + self.delta(x)

        plain = model(ids).logits
        retention = model.model.layers[0].retention
        retention.qkvg_proj = LowRankAdapted(retention.qkvg_proj)
        adapted = model(ids).logits
        assert model.model._fused_decoder is False  # not a plain layer any more: modules only
        model.model.fused_inference = False
        torch.testing.assert_close(model(ids).logits, adapted, rtol=0, atol=0)
        model.model.fused_inference = True
        assert not torch.allclose(adapted, plain)


def test_weights_changed_in_place_or_reassigned_are_seen(model):
    ids = prompt(model, 1, 6)
    with torch.inference_mode():
        before = model(ids).logits
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.1)
    model.load_state_dict(other.state_dict())  # copies in place
    with torch.inference_mode():
        after = model(ids).logits
        model.model.fused_inference = False
        expected = model(ids).logits
        model.model.fused_inference = True
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-10)
    layer = model.model.layers[0]
    layer.ffn.down_proj.weight = nn.Parameter(torch.zeros_like(layer.ffn.down_proj.weight))
    with torch.inference_mode():
        fused = model(ids).logits
        model.model.fused_inference = False
        torch.testing.assert_close(fused, model(ids).logits, rtol=0, atol=1e-10)


def test_training_and_hidden_states_take_the_module_path(model):
    ids = prompt(model, 2, 6)
    with torch.inference_mode():  # what inference keeps (decay factors of short blocks) must not break training
        model(ids)
    model.train()
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert model.model._fused_decoder is None  # never looked for in training
    assert model.model.layers[0].retention.qkvg_proj.weight.grad is not None
    model.eval()
    with torch.inference_mode():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_logits_vocab_range_gives_those_columns_of_the_logits(model):
    ids = prompt(model, 2, 6)
    start, end = model.config.image_token_range
    with torch.inference_mode():
        full = model(ids).logits
        torch.testing.assert_close(model(ids, logits_vocab_range=(start, end)).logits, full[..., start:end])
        model.lm_head.register_forward_hook(lambda module, args, output: output * 2)  # a hooked head is still called
        torch.testing.assert_close(model(ids, logits_vocab_range=(start, end)).logits, 2 * full[..., start:end])
    for bad in [(end, start), (0, model.config.vocab_size + 1), (-1, 3)]:
        with pytest.raises(ValueError, match="logits_vocab_range"):
            model(ids, logits_vocab_range=bad)
    with pytest.raises(ValueError, match="logits_vocab_range=None"):
        model(ids, labels=ids, logits_vocab_range=(start, end))


@pytest.mark.parametrize("hidden_act", ["gelu", "relu"])
def test_the_feed_forward_activation_is_the_configs(model, hidden_act):
    config = FlashVideoConfig(**{**model.config.to_dict(), "hidden_act": hidden_act})
    torch.manual_seed(0)
    other = FlashVideoForCausalLM(config).double().eval()
    other.load_state_dict(model.state_dict())
    ids = prompt(model, 2, 6)
    with torch.inference_mode():
        fused = other(ids).logits
        other.model.fused_inference = False
        torch.testing.assert_close(fused, other(ids).logits, rtol=0, atol=1e-10)
        assert not torch.allclose(fused, model(ids).logits)  # silu's model differs
