"""Growing a model deeper (`flashvideo.training.growth`): the grown model computes what the original does, in every
forward form and through the cache, and its new blocks learn from the first step."""

import pytest
import torch

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM
from flashvideo.training.growth import OUTPUT_PROJECTIONS, deepen, grown_layer_sources


def _small_model(**overrides) -> FlashVideoForCausalLM:
    torch.manual_seed(0)
    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_size=8, **overrides
    )
    model = FlashVideoForCausalLM(config).eval()
    with torch.no_grad():  # trained-looking weights: the initial output projections are not special
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def test_layer_sources_keep_order_and_spread_the_copies():
    assert grown_layer_sources(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert grown_layer_sources(4, 6) == [0, 0, 1, 1, 2, 3]
    assert grown_layer_sources(2, 2) == [0, 1]


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "8"])
def test_bad_depth_is_refused_naming_the_parameter(bad):
    with pytest.raises(ValueError, match="num_hidden_layers must be an integer >= the model's 2 blocks"):
        deepen(_small_model(), bad)


@pytest.mark.parametrize("code_position_embeddings", [False, True])
def test_grown_model_computes_the_same_logits(code_position_embeddings):
    small = _small_model(code_position_embeddings=code_position_embeddings)
    deep = deepen(small, 5)
    assert deep.config.num_hidden_layers == 5 and small.config.num_hidden_layers == 2
    assert [layer.retention.layer_idx for layer in deep.model.layers] == list(range(5))
    ids = torch.randint(3, small.config.vocab_size, (2, 40))
    with torch.no_grad():
        for mode in ("parallel", "chunkwise"):
            torch.testing.assert_close(deep(ids, forward_mode=mode).logits, small(ids, forward_mode=mode).logits)
        # Through the recurrent cache too: greedy continuations are the same tokens.
        out_small = small.generate(ids[:1, :12], max_new_tokens=10, do_sample=False)
        out_deep = deep.generate(ids[:1, :12], max_new_tokens=10, do_sample=False)
    torch.testing.assert_close(out_deep, out_small)


def test_new_blocks_start_as_identities_and_learn_at_once():
    small = _small_model()
    deep = deepen(small, 4).train()
    copies = [deep.model.layers[1], deep.model.layers[3]]  # each after the block it copies
    for layer in copies:
        for name in OUTPUT_PROJECTIONS:
            assert not layer.get_parameter(name).any()
    ids = torch.randint(3, small.config.vocab_size, (2, 24))
    deep(ids, labels=ids, forward_mode="chunkwise").loss.backward()
    for layer in copies:
        for name in OUTPUT_PROJECTIONS:
            assert layer.get_parameter(name).grad.abs().sum() > 0
    # The original is untouched.
    assert small.config.num_hidden_layers == 2 and all(p.grad is None for p in small.parameters())


def test_grown_model_round_trips_through_save_pretrained(tmp_path):
    small = _small_model()
    deepen(small, 3).save_pretrained(tmp_path)
    loaded = FlashVideoForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, small.config.vocab_size, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, small(ids).logits)
