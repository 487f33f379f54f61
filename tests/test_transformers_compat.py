"""
The cache is called `cache` (transformers 5.24's name) and `past_key_values` (5.23's) on every supported
release.

Runs in the main environment and in those of `make test-transformers-oldest` / `-newest`.
"""

import warnings

import pytest
import torch
import transformers
from transformers import modeling_outputs

from flashvideo import RetNetCache
from flashvideo.transformers_compat import CACHE_NAME, CausalLMOutputWithPast, add_cache_field


@pytest.fixture
def prompt():
    return torch.tensor([[10, 11, 12, 13, 14, 15]])


def test_cache_name_follows_the_installed_release():
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    assert CACHE_NAME == ("cache" if (major, minor) >= (5, 24) else "past_key_values")


def test_output_classes_take_and_give_both_names():
    cache = RetNetCache(2)
    for output in (CausalLMOutputWithPast(cache=cache), CausalLMOutputWithPast(past_key_values=cache)):
        assert isinstance(output, modeling_outputs.CausalLMOutputWithPast)
        assert output.cache is cache and output.past_key_values is cache
        assert CACHE_NAME in output and output.to_tuple() == (cache,)
    with pytest.raises(ValueError, match="cache"):
        CausalLMOutputWithPast(cache=cache, past_key_values=RetNetCache(2))


def test_add_cache_field_keeps_every_field():
    from transformers.generation import GenerateDecoderOnlyOutput

    cache, sequences = RetNetCache(2), torch.tensor([[1, 2]])
    output = add_cache_field(GenerateDecoderOnlyOutput(sequences=sequences, **{CACHE_NAME: cache}))
    assert isinstance(output, GenerateDecoderOnlyOutput)
    assert output.sequences is sequences and output.cache is cache and output.past_key_values is cache
    assert add_cache_field(sequences) is sequences  # plain tensors pass through


def test_forward_takes_both_names(tiny_model, prompt):
    with torch.no_grad():
        new = tiny_model(prompt, cache=RetNetCache(2), use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            old = tiny_model(prompt, past_key_values=RetNetCache(2), use_cache=True)
    assert torch.equal(new.logits, old.logits)
    assert new.cache.get_seq_length() == old.cache.get_seq_length() == prompt.shape[1]


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_generate_continues_from_a_cache_under_either_name(tiny_model, prompt, name):
    greedy = dict(do_sample=False, eos_token_id=None, pad_token_id=tiny_model.config.pad_token_id)
    whole = tiny_model.generate(prompt, max_new_tokens=10, **greedy)
    first = tiny_model.generate(prompt, max_new_tokens=5, return_dict_in_generate=True, **greedy)
    assert isinstance(first.cache, RetNetCache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5.24 warns about past_key_values, 5.23 does not
        assert first.past_key_values is first.cache
        continued = tiny_model.generate(
            first.sequences, attention_mask=torch.ones_like(first.sequences), max_new_tokens=5,
            **{name: first.cache}, **greedy,
        )  # fmt: skip
    assert torch.equal(continued, whole)


def test_generate_does_not_warn_about_its_own_cache_argument(tiny_model, prompt, recwarn):
    pad = tiny_model.config.pad_token_id
    tiny_model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=pad)
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]
