"""generate() through the RetNetCache: same tokens as without a cache, for every decoding strategy."""

import os
import shutil

import pytest
import torch

from flashvideo import RetNetCache


@pytest.fixture
def prompt():
    return torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(0))


def generate(model, prompt, seed=None, **kwargs):
    if seed is not None:
        torch.manual_seed(seed)
    kwargs.setdefault("max_new_tokens", 12)
    kwargs.setdefault("eos_token_id", None)  # fixed-length outputs make comparisons simple
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)


def test_greedy_same_with_and_without_cache(tiny_model, prompt):
    fed_lengths = []
    hook = tiny_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: fed_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    cached = generate(tiny_model, prompt, do_sample=False)
    hook.remove()
    # one prefill call for the prompt, then one recurrent step per new token
    assert fed_lengths == [6] + [1] * 11
    uncached = generate(tiny_model, prompt, do_sample=False, use_cache=False)
    assert cached.shape == (2, 18)
    assert torch.equal(cached, uncached)


def test_seeded_sampling_same_with_and_without_cache(tiny_model, prompt):
    kwargs = dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.95)
    cached = generate(tiny_model, prompt, seed=7, **kwargs)
    uncached = generate(tiny_model, prompt, seed=7, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, generate(tiny_model, prompt, seed=8, **kwargs))


def test_num_return_sequences(tiny_model, prompt):
    out = generate(tiny_model, prompt, seed=1, do_sample=True, num_return_sequences=3)
    assert out.shape == (6, 18)
    assert torch.equal(out[:3, :6], prompt[:1].expand(3, -1))
    assert len({tuple(row.tolist()) for row in out[:3]}) > 1


def test_beam_search_same_with_and_without_cache(tiny_model, prompt):
    kwargs = dict(do_sample=False, num_beams=3, num_return_sequences=2, max_new_tokens=8)
    cached = generate(tiny_model, prompt, **kwargs)
    uncached = generate(tiny_model, prompt, use_cache=False, **kwargs)
    assert cached.shape == (4, 14)
    assert torch.equal(cached, uncached)


def test_continue_from_returned_cache(tiny_model, prompt):
    whole = generate(tiny_model, prompt, do_sample=False, max_new_tokens=16)
    first = tiny_model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8, eos_token_id=None,
        return_dict_in_generate=True,
    )  # fmt: skip
    cache = first.cache
    assert isinstance(cache, RetNetCache)
    continued = tiny_model.generate(
        first.sequences, attention_mask=torch.ones_like(first.sequences), cache=cache,
        do_sample=False, max_new_tokens=8, eos_token_id=None,
    )  # fmt: skip
    assert torch.equal(continued, whole)


def test_left_padded_batch_generates_each_unpadded_result(tiny_model):
    pad = tiny_model.config.pad_token_id
    short = torch.tensor([[10, 11, 12]])
    long = torch.tensor([[20, 21, 22, 23, 24, 25]])
    batch = torch.cat([torch.cat([torch.full((1, 3), pad), short], 1), long])
    mask = (torch.arange(6) >= 3).long()[None].repeat(2, 1)
    mask[1] = 1
    out = tiny_model.generate(batch, attention_mask=mask, do_sample=False, max_new_tokens=10, eos_token_id=None)
    alone_short = generate(tiny_model, short, do_sample=False, max_new_tokens=10)
    alone_long = generate(tiny_model, long, do_sample=False, max_new_tokens=10)
    assert torch.equal(out[0, 3:], alone_short[0])
    assert torch.equal(out[1], alone_long[0])


@pytest.mark.parametrize("batch_row", [0, 1])
def test_prompt_lookup_decoding_gives_the_greedy_tokens(tiny_model, prompt, batch_row):
    # A repetitive prompt, so that the lookup finds candidates and the cache is cropped after partial acceptance.
    repeated = prompt[batch_row : batch_row + 1].repeat(1, 3)
    plain = generate(tiny_model, repeated, do_sample=False, max_new_tokens=24)
    crops = []
    original_crop = RetNetCache.crop
    RetNetCache.crop = lambda self, n: (crops.append(n), original_crop(self, n))[1]
    try:
        assisted = generate(tiny_model, repeated, do_sample=False, max_new_tokens=24, prompt_lookup_num_tokens=4)
    finally:
        RetNetCache.crop = original_crop
    assert torch.equal(assisted, plain)
    assert any(n < 0 for n in crops), "no draft was ever rejected: the rollback was not exercised"


def test_assistant_model_decoding_gives_the_greedy_tokens(tiny_model, tiny_config, prompt):
    from flashvideo import FlashVideoForCausalLM

    torch.manual_seed(1)
    assistant = FlashVideoForCausalLM(tiny_config).eval()  # a different model: many drafts are rejected
    plain = generate(tiny_model, prompt[:1], do_sample=False, max_new_tokens=20)
    assisted = generate(tiny_model, prompt[:1], do_sample=False, max_new_tokens=20, assistant_model=assistant)
    assert torch.equal(assisted, plain)
    # The same model as its own assistant accepts every draft.
    assert torch.equal(generate(tiny_model, prompt[:1], do_sample=False, max_new_tokens=20, assistant_model=tiny_model), plain)


def test_generate_refuses_a_foreign_cache(tiny_model, prompt):
    from transformers import DynamicCache

    with pytest.raises(ValueError, match="RetNetCache"):
        tiny_model.generate(prompt, cache=DynamicCache(), max_new_tokens=2)


requires_cxx = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile's CPU backend needs a C++ compiler"
)


@requires_cxx
def test_compiled_recurrent_step_samples_the_same_tokens(tiny_model, prompt):
    eager = generate(tiny_model, prompt, seed=3, do_sample=True, top_k=20)
    tiny_model.compile_recurrent_step()
    compiled_step, step_lengths = tiny_model.model._compiled_run, []

    def counting_step(input_ids, *args):
        step_lengths.append(input_ids.shape[1])
        return compiled_step(input_ids, *args)

    tiny_model.model._compiled_run = counting_step
    compiled = generate(tiny_model, prompt, seed=3, do_sample=True, top_k=20)
    assert torch.equal(compiled, eager)
    # every decode step took the compiled path, the prefill did not
    assert step_lengths == [1] * 11
    with torch.no_grad():
        cache = tiny_model(prompt, use_cache=True).cache
        eager_logits = tiny_model.lm_head(tiny_model.model._embed_and_run_layers(
            prompt[:, :1], None, None, torch.tensor([6]), None, cache.states, "recurrent", False
        )[0])  # fmt: skip
        assert torch.allclose(tiny_model(prompt[:, :1], cache=cache).logits, eager_logits, atol=1e-5)
        cache.rewind(0)  # the step again, now through `decode` (the pipeline's call), compiled the same way
        assert torch.allclose(tiny_model.decode(prompt[:, :1], cache), eager_logits, atol=1e-5)
    assert step_lengths == [1] * 13


@requires_cxx
def test_two_compiled_models_keep_every_shape_compiled_once(tiny_model, float64_code_position_model):
    """Both models compile the same function, and past dynamo's limit of graphs per function (8 by default; 3 here,
    so that the test compiles few) further shapes would run eagerly without an error. Every call below must run
    compiled (about 80 aten operators at most with the Python wrapper, its matrix products among them, against
    240-350 eager), and each shape compile once: a second prompt length must not compile again (the cache's frame
    places keep stride 1), nor a second call of a multi-token length (no dict the graph reads and fills)."""
    from torch._dynamo.utils import counters

    from flashvideo.evaluation.bench_decode import count_aten_ops

    with torch._dynamo.config.patch(recompile_limit=3):
        counters.clear()
        calls = [(tiny_model, 7, 1, 1), (tiny_model, 7, 3, 5)]
        code_model = float64_code_position_model
        calls += [(code_model, prefill, 1, 1) for prefill in (7, 9)] + [(code_model, 7, 3, 5)]
        for model in (tiny_model, float64_code_position_model):
            model.compile_recurrent_step(call_lengths=(5,), options={})  # the Python wrapper: quicker to compile
        with torch.inference_mode():
            for model, prefill, batch, length in calls:
                low, high = model.config.image_token_start, model.config.vocab_size
                cache = RetNetCache(model.config.num_hidden_layers)
                model(torch.randint(low, high, (batch, prefill)), cache=cache, use_cache=True)
                step = torch.randint(low, high, (batch, length))
                model.decode(step, cache)  # compiles, where the shape is new
                all_ops, _ = count_aten_ops(lambda: model.decode(step, cache))
                assert all_ops < 120, (model.dtype, prefill, batch, length, all_ops)
    assert counters["stats"]["unique_graphs"] == 4  # one per model and call shape


def test_past_key_values_is_still_accepted_as_the_cache(tiny_model, prompt):
    # transformers 5.24 renamed the argument to `cache`; callers written before keep working until 5.40.
    cache = RetNetCache(tiny_model.config.num_hidden_layers)
    with pytest.warns(FutureWarning, match="past_key_values"):
        old_name = tiny_model(prompt, past_key_values=cache, use_cache=True)
    assert old_name.cache is cache and cache.get_seq_length() == prompt.shape[1]
    assert torch.allclose(old_name.logits, tiny_model(prompt).logits, atol=1e-6)
