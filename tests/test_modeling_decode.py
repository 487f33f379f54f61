"""`FlashVideoForCausalLM.decode`, the lean entry point of decoding loops: the logits `forward` gives and the same
cache, and the full model call whenever hooks, a replaced `forward` or training mode could make the two differ."""

import copy
import os
import shutil

import pytest
import torch
from torch import nn

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, RetNetCache
from flashvideo.ahead_of_time import AheadOfTimeStep


@pytest.fixture
def model(float64_code_position_model):
    return float64_code_position_model


def ids(model, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(model.config.image_token_start, model.config.vocab_size, (batch, length), generator=generator)
    if length > 2:
        ids[:, 2] = model.config.serial_token_range[0]  # a serial number inside: code places change
    return ids


def assert_same_cache(cache: RetNetCache, reference: RetNetCache) -> None:
    """Identical, not just close: decode and forward run the same computation."""
    assert cache._seen_tokens == reference._seen_tokens
    assert (cache._deferred is None) == (reference._deferred is None)
    for name in ("row_positions", "frame_places"):
        mine, theirs = getattr(cache, name), getattr(reference, name)
        assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs)), name
    assert len(cache.records) == len(reference.records)
    for record, expected in zip(cache.records, reference.records):
        assert (record.seen_tokens, record.length) == (expected.seen_tokens, expected.length)
        for name in ("keys", "values", "states"):
            for mine, theirs in zip(getattr(record, name), getattr(expected, name)):
                assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs)), name
        for name in ("row_positions", "frame_places", "places", "prefix_decays"):
            mine, theirs = getattr(record, name), getattr(expected, name)
            assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs)), name
    for state, expected in zip(cache.states, reference.states):
        assert torch.equal(state, expected)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("vocab_range", [None, "image codes"])
def test_decode_gives_forwards_logits_and_leaves_the_same_cache(model, batch, vocab_range):
    vocab_range = model.config.image_token_range if vocab_range else None
    layers = model.config.num_hidden_layers
    by_forward, by_decode = RetNetCache(layers), RetNetCache(layers)
    kept = [2, 5, 1][:batch] if batch > 1 else [3]
    calls = [(5, 5, None), (5, 3, kept), (1, 1, None), (5, 5, None), (1, 1, None), (5, 2, None)]
    with torch.inference_mode():
        for cache in (by_forward, by_decode):
            model(ids(model, batch, 7, seed=0), cache=cache, use_cache=True)
        for seed, (length, keep, rewind) in enumerate(calls, start=1):
            step = ids(model, batch, length, seed)
            expected = model(
                step, cache=by_forward, use_cache=True, logits_to_keep=keep, logits_vocab_range=vocab_range,
                check_inputs=False,
            ).logits  # fmt: skip
            logits = model.decode(step, by_decode, logits_to_keep=keep, logits_vocab_range=vocab_range)
            assert type(logits) is torch.Tensor and torch.equal(logits, expected)
            assert_same_cache(by_decode, by_forward)
            if rewind is not None:  # rows then stand at different positions (batch 3), which decode follows
                by_forward.rewind(rewind)
                by_decode.rewind(rewind)
                assert_same_cache(by_decode, by_forward)
    assert batch == 1 or by_decode.row_positions is not None


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler")
def test_the_compiled_step_gives_the_eager_logits_code_places_and_states(model):
    """`compile_recurrent_step` (ahead of time) compiles the embeddings with the layers: the code places a step reads
    from the cache and returns into it (across a serial number, after per-row rewinds) are the eager step's. The
    programs read the model's own weights: updated in place, `.data` replaced or a parameter reassigned, the next
    call computes with the new ones, without compiling again."""
    compiled = copy.deepcopy(model)
    compiled.compile_recurrent_step(call_lengths=(5,))
    assert isinstance(compiled.model._compiled_run, AheadOfTimeStep)
    layers = model.config.num_hidden_layers
    eager_cache, compiled_cache = RetNetCache(layers), RetNetCache(layers)
    serial = model.config.serial_token_range[0]
    steps = [(1, None), (1, serial), (1, None), (5, None), (1, None)]
    with torch.inference_mode():
        for each, cache in ((model, eager_cache), (compiled, compiled_cache)):
            each(ids(model, 3, 7, seed=0), cache=cache, use_cache=True)
        for seed, (length, token) in enumerate(steps, start=1):
            step = ids(model, 3, length, seed)
            if token is not None:
                step[:, 0] = token
            expected = model.decode(step, eager_cache, logits_to_keep=length)
            assert torch.allclose(compiled.decode(step, compiled_cache, logits_to_keep=length), expected, atol=1e-9)
            assert torch.equal(compiled_cache.frame_places, eager_cache.frame_places)
            if length > 1:
                for cache in (eager_cache, compiled_cache):
                    cache.rewind([2, 5, 1])
        for state, expected in zip(compiled_cache.states, eager_cache.states):
            assert torch.allclose(state, expected, atol=1e-9)
        programs = dict(compiled.model._compiled_run.programs)
        # One per call shape: the step, the 5-token call, and the step once rows stand at different positions.
        assert len(programs) == 3, list(programs)
        for seed, update in enumerate(("in place", "in place through .data", ".data replaced", "reassigned"), start=10):
            step = ids(model, 3, 1, seed)
            before = model.decode(step, copy.deepcopy(eager_cache))
            for each in (model, compiled):
                update_weights(each, update)
            expected = model.decode(step, eager_cache)
            assert not torch.allclose(before, expected, atol=1e-6), update  # the update matters
            assert torch.allclose(compiled.decode(step, compiled_cache), expected, atol=1e-9), update
        assert compiled.model._compiled_run.programs == programs


def test_calls_a_program_cannot_serve_run_eagerly_and_compile_nothing(model):
    """With gradients enabled or hidden states asked for, the ahead-of-time step runs the eager function (and
    compiles no program); a copied model gets a step of its own."""
    compiled = copy.deepcopy(model)
    compiled.compile_recurrent_step()
    cache, eager_cache = RetNetCache(model.config.num_hidden_layers), RetNetCache(model.config.num_hidden_layers)
    prompt, step = ids(model, 2, 5, seed=0), ids(model, 2, 1, seed=1)
    with torch.no_grad():
        compiled(prompt, cache=cache, use_cache=True)
        model(prompt, cache=eager_cache, use_cache=True)
    with torch.enable_grad():
        logits = compiled.decode(step, cache)
    assert logits.requires_grad and torch.allclose(logits, model.decode(step, eager_cache).detach(), atol=1e-12)
    with torch.no_grad():
        hidden = compiled(step, cache=cache, use_cache=True, output_hidden_states=True).hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert compiled.model._compiled_run.programs == {}
    copied = copy.deepcopy(compiled)
    assert isinstance(copied.model._compiled_run, AheadOfTimeStep) and copied.model._compiled_run.model is copied.model
    with pytest.raises(ValueError, match="ahead_of_time=False"):
        compiled.compile_recurrent_step(ahead_of_time=True, mode="max-autotune")


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler")
def test_a_compiled_model_moved_to_another_dtype_gets_a_program_of_its_own(model):
    """`model.to(dtype)` keeps the parameter objects and swaps their storage: the step notices and compiles for the
    new dtype rather than feeding float32 weights to a float64 program."""
    compiled = copy.deepcopy(model)
    compiled.compile_recurrent_step()
    prompt, step = ids(model, 2, 5, seed=0), ids(model, 2, 1, seed=1)
    for dtype in (torch.float64, torch.float32):
        for each in (model, compiled):
            each.to(dtype)
        caches = [RetNetCache(model.config.num_hidden_layers) for _ in range(2)]
        with torch.inference_mode():
            for each, cache in zip((model, compiled), caches):
                each(prompt, cache=cache, use_cache=True)
            logits = compiled.decode(step, caches[1])
            assert logits.dtype == dtype
            assert torch.allclose(logits, model.decode(step, caches[0]), atol=1e-9 if dtype == torch.float64 else 1e-4)
    assert len(compiled.model._compiled_run.programs) == 2


def update_weights(model: FlashVideoForCausalLM, how: str) -> None:
    """Change a weight the decode step reads, the way user code does: in place (on the parameter or its `.data`), by
    replacing a parameter's `.data`, or by reassigning a module's parameter (outside inference mode, as training code would)."""
    with torch.inference_mode(False), torch.no_grad():
        if how == "in place":
            model.model.layers[1].ffn.down_proj.weight.mul_(-2.0)
        elif how == "in place through .data":  # older training code, parameter merges (PEFT): no version bump
            model.model.layers[0].ffn.gate_up_proj.weight.data.mul_(-1.0)
        elif how == ".data replaced":
            embeddings = model.model.embed_tokens.weight
            embeddings.data = torch.flip(embeddings.data, dims=[0])
        else:
            o_proj = model.model.layers[0].retention.o_proj
            o_proj.weight = nn.Parameter(torch.flip(o_proj.weight, dims=[1]))


def test_decode_without_a_cache_of_the_model_is_refused(model):
    step = ids(model, 2, 1, seed=1)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="cache must be a RetNetCache"):
            model.decode(step, None)
        cache = RetNetCache(model.config.num_hidden_layers)
        model(ids(model, 2, 4, seed=0), cache=cache, use_cache=True)
        with pytest.raises(ValueError, match="batch size 2"):
            model.decode(step[:1], cache)
        with pytest.raises(ValueError, match="integer tensor"):
            model.decode(step.double(), cache)
        with pytest.raises(ValueError, match=r"shape \[batch, length\]"):
            model.decode(step[0], cache)
        with pytest.raises(ValueError, match="states for 1 layers"):
            model.decode(step, RetNetCache(1))


def test_decode_does_not_read_tensors_on_the_host(model, monkeypatch):
    cache = RetNetCache(model.config.num_hidden_layers)
    with torch.inference_mode():
        model(ids(model, 3, 6, seed=0), cache=cache, use_cache=True)

        def host_read(*args, **kwargs):
            raise AssertionError("a tensor was read on the host during decode")

        for name in ("item", "tolist", "__bool__"):
            monkeypatch.setattr(torch.Tensor, name, host_read)
        model.decode(ids(model, 3, 1, seed=1), cache)
        model.decode(ids(model, 3, 5, seed=2), cache, logits_to_keep=5)


def counting_forward(monkeypatch):
    """Count calls of `FlashVideoForCausalLM.forward` (patched on the class, so decode's own checks still see the
    class's forward)."""
    calls = []
    forward = FlashVideoForCausalLM.forward

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("logits_to_keep"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FlashVideoForCausalLM, "forward", counted)
    return calls


def prefilled(model) -> RetNetCache:
    cache = RetNetCache(model.config.num_hidden_layers)
    with torch.inference_mode():
        model(ids(model, 2, 6, seed=0), cache=cache, use_cache=True)
    return cache


@pytest.mark.parametrize("where", ["model", "decoder", "lm_head", "global", "pre-hook"])
def test_a_forward_hook_makes_decode_call_the_model(model, monkeypatch, where):
    calls = counting_forward(monkeypatch)
    step = ids(model, 2, 5, seed=3)
    with torch.inference_mode():
        expected = model(step, cache=prefilled(model), use_cache=True, logits_to_keep=2).logits
        lean, hooked = prefilled(model), prefilled(model)
        calls.clear()
        model.decode(step, lean, logits_to_keep=2)
        assert calls == []  # no hook: the lean path
        seen = []
        if where == "global":
            handle = nn.modules.module.register_module_forward_hook(lambda *args: seen.append(1))
        elif where == "pre-hook":
            handle = model.register_forward_pre_hook(lambda *args: seen.append(1))
        else:
            module = {"model": model, "decoder": model.model, "lm_head": model.lm_head}[where]
            handle = module.register_forward_hook(lambda *args: seen.append(1))
        try:
            logits = model.decode(step, hooked, logits_to_keep=2)
        finally:
            handle.remove()
    assert calls == [2] and seen  # through the model's call, and the hook ran
    # (a hook on the decoder also sends the layers through their modules: the same to float64 rounding)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)


def test_a_forward_replaced_on_the_instance_is_used(model):
    step = ids(model, 2, 1, seed=4)
    with torch.inference_mode():
        expected = model(step, cache=prefilled(model), use_cache=True).logits
    caches = [prefilled(model), prefilled(model)]
    calls, original = [], model.forward

    def patched(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.forward = patched  # what a wrapper that patches forward does
    with torch.inference_mode():
        assert torch.equal(model.decode(step, caches[0]), expected)
    assert calls == [1]
    del model.forward

    accelerate_hooks = pytest.importorskip("accelerate.hooks")

    class Recording(accelerate_hooks.ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            calls.append(2)
            return args, kwargs

    accelerate_hooks.add_hook_to_module(model.model, Recording())  # sets model.model.forward on the instance
    with torch.inference_mode():
        assert torch.equal(model.decode(step, caches[1]), expected)
    assert calls == [1, 2]
    accelerate_hooks.remove_hook_from_module(model.model)
    assert not model._decode_calls_forward()


def test_training_mode_or_a_subclass_forward_calls_the_model(model, monkeypatch):
    calls = counting_forward(monkeypatch)
    step = ids(model, 2, 3, seed=5)
    with torch.inference_mode():
        expected = model(step, cache=prefilled(model), use_cache=True, logits_to_keep=1).logits
        cache = prefilled(model)
        calls.clear()
        model.train()
        # no dropout: the same logits, to rounding (training runs the layers as modules)
        torch.testing.assert_close(model.decode(step, cache), expected, rtol=0, atol=1e-12)
        model.eval()
        assert calls == [1]

        class Scaled(FlashVideoForCausalLM):
            def forward(self, *args, **kwargs):
                output = super().forward(*args, **kwargs)
                output.logits = 2 * output.logits
                return output

        model.__class__ = Scaled
        try:
            assert torch.equal(model.decode(step, prefilled(model)), 2 * expected)
        finally:
            model.__class__ = FlashVideoForCausalLM


@pytest.mark.parametrize("subfolder, batch", [("", 1), ("interpolation", 3)])
def test_shipped_models_decode_as_they_forward(subfolder, batch):
    """The key-frame model has code position embeddings; the sampler's calls: 5 tokens, image-code logits, then a
    rewind to each row's accepted prefix."""
    import flashvideo

    path = flashvideo.default_checkpoint() / subfolder if subfolder else flashvideo.default_checkpoint()
    model = FlashVideoForCausalLM.from_pretrained(path).eval()
    assert (model.model.code_positions is not None) == (subfolder == "")
    vocab_range = model.config.image_token_range
    generator = torch.Generator().manual_seed(7)
    prompt = torch.randint(*vocab_range, (batch, 20), generator=generator)
    prompt[:, 4] = model.config.serial_token_range[0]
    by_forward, by_decode = (RetNetCache(model.config.num_hidden_layers) for _ in range(2))
    with torch.inference_mode():
        for cache in (by_forward, by_decode):
            model(prompt, cache=cache, use_cache=True)
        for call in range(4):
            step = torch.randint(*vocab_range, (batch, 5), generator=generator)
            kept = torch.randint(1, 6, (batch,), generator=generator).tolist()
            expected = model(
                step, cache=by_forward, use_cache=True, logits_to_keep=5, logits_vocab_range=vocab_range,
                check_inputs=False,
            ).logits  # fmt: skip
            logits = model.decode(step, by_decode, logits_to_keep=5, logits_vocab_range=vocab_range)
            assert torch.equal(logits, expected)
            by_forward.rewind(kept)
            by_decode.rewind(kept)
            assert_same_cache(by_decode, by_forward)
