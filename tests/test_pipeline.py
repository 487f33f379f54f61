"""FlashVideoPipeline on a tiny random model: the exact sequences fed, interpolation order, redundant-free rules."""

import copy
import os
import shutil

import numpy as np
import pytest
import torch
from transformers import pipeline

from flashvideo import FlashVideoPipeline, ImageCodesOnlyLogitsProcessor, classify_tokens
from flashvideo.image_tokenizer import codes_to_frames, frames_to_codes
from flashvideo.pipeline_flashvideo import GenerationStats


PROMPT = "a red circle moving right"


class FeedRecorder:
    """Records the input_ids of every forward call of a model."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(ids.clone())

    def remove(self):
        self.handle.remove()


def test_key_frames_feed_text_and_serial_number_as_one_call(tiny_pipeline, tiny_processor, tiny_config):
    recorder = FeedRecorder(tiny_pipeline.model)
    out = tiny_pipeline(
        PROMPT, num_frames=3, interpolate=False, speculative=False, generator=torch.Generator().manual_seed(0)
    )
    recorder.remove()
    text = tiny_processor.encode_text(PROMPT)
    tokens = tiny_config.tokens_per_frame
    calls = [c[0].tolist() for c in recorder.calls]
    assert len(calls) == 3 * (1 + tokens)
    for frame in range(3):
        block = calls[frame * (1 + tokens) : (frame + 1) * (1 + tokens)]
        assert block[0] == text + [tiny_config.serial_token_id(frame + 1)]  # [text][SN_i] in one call
        assert all(len(call) == 1 for call in block[1:])  # then one image code per call
        low, high = tiny_config.image_token_range
        assert all(low <= call[0] < high for call in block[1:])
    assert out.frames.shape == (1, 3, 16, 16, 3) and out.frames.dtype == np.uint8
    assert out.stats.key_frames.tokens_sampled == 3 * tokens and out.stats.interpolation.frames == 0


def test_interpolation_sequence_and_reordering(tiny_pipeline, tiny_processor, tiny_config):
    tokens, grid, start = tiny_config.tokens_per_frame, tiny_config.code_grid_size, tiny_config.image_token_range[0]
    # Frames stay codes in the pipeline; they become ids only where the model is fed.
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, tiny_config.image_vocab_size, (1, 2, grid, grid), generator=generator)
    key_frames = codes.flatten(2) + start
    recorder = FeedRecorder(tiny_pipeline.interpolation_model)
    video = tiny_pipeline.interpolate(
        [PROMPT], codes, num_inserted=2, speculative=False, generator=torch.Generator().manual_seed(0)
    )
    recorder.remove()
    text = tiny_processor.encode_text(PROMPT)
    sn = tiny_config.serial_token_id
    a, b = key_frames[0, 0].tolist(), key_frames[0, 1].tolist()
    calls = [c[0].tolist() for c in recorder.calls]
    # [text][SN_1][A][text][SN_4][B][text][SN_2] in one call, then F_2's codes, then [text][SN_3], then F_3's codes
    assert calls[0] == text + [sn(1)] + a + text + [sn(4)] + b + text + [sn(2)]
    f2 = [call[0] for call in calls[1 : 1 + tokens]]
    assert calls[1 + tokens] == text + [sn(3)]
    f3 = [call[0] for call in calls[2 + tokens : 2 + 2 * tokens]]
    assert len(calls) == 2 + 2 * tokens
    # reordered by serial number: A, F_2, F_3, B
    assert video.shape == (1, 4, grid, grid)
    assert (video[0].flatten(1) + start).tolist() == [a, f2, f3, b]


def test_recursive_interpolation_batches_all_pairs(tiny_pipeline, tiny_config):
    recorder = FeedRecorder(tiny_pipeline.interpolation_model)
    outs = tiny_pipeline(
        [PROMPT, "a blue square moving up"], batch_size=2, num_frames=7, key_frame_spacing=3, speculative=False,
        generator=torch.Generator().manual_seed(0),
    )
    recorder.remove()
    out = outs[0]
    # key frames: 2 prompts; interpolation: 2 prompts × 2 adjacent key-frame pairs = one batch of 4, with
    # 1 prefix call + 2 frames × 16 codes + 1 more prefix
    interpolation_calls = 1 + 2 * tiny_config.tokens_per_frame + 1
    assert {call.shape[0] for call in recorder.calls[:-interpolation_calls]} == {2}
    assert {call.shape[0] for call in recorder.calls[-interpolation_calls:]} == {4}
    assert len(outs) == 2 and {o.frames.shape for o in outs} == {(1, 7, 16, 16, 3)}
    assert outs[1].stats is out.stats  # the batch's stats, shared by its clips
    assert out.stats.key_frames.frames == 2 * 3 and out.stats.interpolation.frames == 2 * 2 * 2
    assert out.stats.interpolation.tokens_sampled == 2 * 2 * 2 * tiny_config.tokens_per_frame


def test_token_classes_on_a_known_grid():
    a = torch.zeros(1, 6, 6, dtype=torch.long)
    b = a.clone()
    b[0, 2, 3] = 7
    classes = classify_tokens(a, b, inherit_ratio=1.0, unstable_radius=1)
    assert classes.different.sum() == 1 and classes.different[0, 2, 3]
    expected_unstable = torch.zeros(6, 6, dtype=torch.bool)
    expected_unstable[1:4, 2:5] = True
    expected_unstable[2, 3] = False
    assert torch.equal(classes.unstable[0], expected_unstable)
    assert classes.stable.sum() == 36 - 9 and torch.equal(classes.inheritable, classes.stable)
    half = classify_tokens(a, b, inherit_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert half.inheritable.sum() == round(0.5 * 27) and not (half.inheritable & ~half.stable).any()
    with pytest.raises(ValueError, match="inherit_ratio"):
        classify_tokens(a, b, inherit_ratio=1.5)


def _key_frames_with_a_moving_patch(config):
    """Two key frames (codes) that agree except in one corner of the grid, as a moving object would."""
    grid = config.code_grid_size
    a = torch.full((grid, grid), 3)
    b = a.clone()
    b[0, 0] = 9
    return torch.stack([a, b])[None]


def test_redundant_free_inherits_only_stable_positions(tiny_pipeline, tiny_processor, tiny_config):
    key_frames = _key_frames_with_a_moving_patch(tiny_config)
    a_codes, b_codes = key_frames[0, 0], key_frames[0, 1]
    classes = classify_tokens(a_codes[None], b_codes[None], inherit_ratio=1.0, unstable_radius=1)
    recorder = FeedRecorder(tiny_pipeline.interpolation_model)
    stats = GenerationStats()
    video = tiny_pipeline.interpolate(
        [PROMPT], key_frames, num_inserted=2, stats=stats, redundant_free=True, inherit_ratio=1.0,
        unstable_radius=1, speculative=False, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    recorder.remove()
    assert stats.interpolation.model_calls == len(recorder.calls)
    inheritable = classes.inheritable.flatten()
    for inserted in video[0, 1:-1]:
        assert torch.equal(inserted.flatten()[inheritable], key_frames[0, 0].flatten()[inheritable])
    # 16 positions, 1 Different + 3 Unstable sampled per frame: inherited runs are fed as multi-token calls
    assert not (inheritable & (classes.different | classes.unstable).flatten()).any()
    # Raster order: cells 0, 1, 4, 5 are sampled, the rest inherited. A sampled token and the inherited run after
    # it go in one call: the prefix (which samples cell 0), [0], [1, 2, 3], [4], [5, 6 … 15].
    lengths = [call.shape[1] for call in recorder.calls]
    prefix_lengths = [lengths[0], len(tiny_processor.encode_text(PROMPT)) + 1]
    assert lengths == [prefix_lengths[0], 1, 3, 1, 11, prefix_lengths[1], 1, 3, 1, 11]
    assert stats.interpolation.model_calls == 2 * 5  # 5 calls per inserted frame instead of 1 + 16 - 1


def test_redundant_free_counts_in_stats(tiny_pipeline, tiny_config):
    first = np.zeros((16, 16, 3), dtype=np.uint8)
    out = tiny_pipeline(
        PROMPT, num_frames=6, key_frame_spacing=5, redundant_free=True, inherit_ratio=1.0, first_frame=first,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    stats = out.stats.interpolation
    assert stats.tokens_sampled + stats.tokens_inherited == 4 * tiny_config.tokens_per_frame
    assert out.stats.frames_per_second > 0


def test_redundant_free_interpolation_is_the_default(tiny_pipeline, monkeypatch):
    """As in the paper: a plain call interpolates redundant-free, inheriting 20% of the stable tokens."""
    received = {}
    interpolate = tiny_pipeline.interpolate

    def spy(*args, **kwargs):
        received.update(kwargs)
        return interpolate(*args, **kwargs)

    monkeypatch.setattr(tiny_pipeline, "interpolate", spy)
    tiny_pipeline(PROMPT, num_frames=6, key_frame_spacing=5, generator=torch.Generator().manual_seed(0))
    assert received["redundant_free"] is True and received["inherit_ratio"] == 0.2


def test_inherit_ratio_zero_reproduces_plain_interpolation(tiny_pipeline, tiny_config):
    key_frames = _key_frames_with_a_moving_patch(tiny_config)
    plain = tiny_pipeline.interpolate([PROMPT], key_frames, 3, generator=torch.Generator().manual_seed(5))
    zero = tiny_pipeline.interpolate(
        [PROMPT], key_frames, 3, redundant_free=True, inherit_ratio=0.0, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(plain, zero)


def test_generation_config_supplies_the_sampling_defaults(tiny_model, tiny_processor, tiny_vq):
    """What a call leaves at None comes from each stage's model's generation_config; what it sets wins."""
    interpolation_model = copy.deepcopy(tiny_model)
    pipe = FlashVideoPipeline(
        model=tiny_model, processor=tiny_processor, vqvae=tiny_vq, interpolation_model=interpolation_model,
        device="cpu", show_progress=False,
    )  # fmt: skip

    def clip(seed: int, **kwargs) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        # Plain interpolation: redundant-free draws its inherited subset from the generator even when greedy.
        return pipe(PROMPT, num_frames=6, redundant_free=False, generator=generator, **kwargs).frames[0]

    key, inserted = [0, 5], slice(1, 5)
    tiny_model.generation_config.do_sample = False  # the key-frame model's checkpoint asks for greedy decoding
    first, second = clip(0), clip(1)
    assert np.array_equal(first[key], second[key])
    assert not np.array_equal(first[inserted], second[inserted])  # the interpolation model still samples
    first, second = clip(0, do_sample=True), clip(1, do_sample=True)  # an argument overrides the config
    assert not np.array_equal(first[key], second[key])
    interpolation_model.generation_config.do_sample = False
    assert np.array_equal(clip(0), clip(1))
    interpolation_model.generation_config.temperature = 0.0
    message = r"temperature must be .* got 0\.0 \(from the interpolation model's generation_config\)"
    with pytest.raises(ValueError, match=message):
        clip(0)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler")
def test_compiled_recurrent_step_gives_the_same_clip(tiny_pipeline):
    # Plain sampling makes the same random draws compiled or not; speculative decoding, whose compiled verify calls
    # have one padded shape (and so draw differently), gives greedy decoding's clip either way.
    settings = [dict(speculative=False), dict(do_sample=False, num_draft_tokens=4)]
    kwargs = dict(num_frames=5, key_frame_spacing=4, redundant_free=True, inherit_ratio=0.5)
    eager = [tiny_pipeline(PROMPT, generator=torch.Generator().manual_seed(2), **kwargs, **s) for s in settings]
    assert tiny_pipeline.compile_recurrent_step(num_draft_tokens=4) is tiny_pipeline
    recorder = FeedRecorder(tiny_pipeline.model)
    compiled = [tiny_pipeline(PROMPT, generator=torch.Generator().manual_seed(2), **kwargs, **s) for s in settings]
    recorder.remove()
    for before, after in zip(eager, compiled):
        assert np.array_equal(after.frames, before.frames)
        assert after.stats.interpolation.tokens_inherited == before.stats.interpolation.tokens_inherited
    # Verify calls from the cache are padded to one token and 4 drafts: one shape for the compiled model.
    lengths = {call.shape[1] for call in recorder.calls}
    assert 5 in lengths and lengths <= {1, 5} | {call.shape[1] for call in recorder.calls if call.shape[1] > 5}


def test_first_frame_is_fed_not_sampled(tiny_pipeline, tiny_vq):
    first = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = tiny_pipeline(
        PROMPT, num_frames=3, interpolate=False, first_frame=first, speculative=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    expected = codes_to_frames(tiny_vq, frames_to_codes(tiny_vq, first[None]))[0]
    assert np.array_equal(out.frames[0, 0], expected)
    assert out.stats.key_frames.tokens_sampled == 2 * 16
    # One call for [text][SN_1][first frame], then per sampled frame its prefix and one call per token.
    assert out.stats.key_frames.model_calls == 1 + 2 * (1 + 16)


@pytest.mark.parametrize(
    "sampling",
    [
        dict(do_sample=False),  # speculative (the default): greedy output is greedy decoding's
        dict(do_sample=False, speculative=False),
        dict(do_sample=True, temperature=0.8, top_k=10, top_p=0.9, speculative=False),  # same random draws
    ],
)
def test_same_tokens_as_generate(tiny_pipeline, tiny_processor, tiny_config, sampling):
    """The pipeline's decode loop is the model: generate() gives the same two key frames for the same seed."""
    tokens = tiny_config.tokens_per_frame
    torch.manual_seed(11)
    ours = tiny_pipeline.generate_key_frames([PROMPT], 2, **sampling)
    sampling.pop("speculative", None)
    model = tiny_pipeline.model
    restrict = [ImageCodesOnlyLogitsProcessor(tiny_config.image_token_range)]
    torch.manual_seed(11)
    prompt = torch.tensor([tiny_processor.keyframe_prefix(PROMPT, 1)])
    first = model.generate(
        prompt, max_new_tokens=tokens, logits_processor=restrict, return_dict_in_generate=True, eos_token_id=None, **sampling
    )  # fmt: skip
    second_prompt = torch.cat([first.sequences, torch.tensor([tiny_processor.keyframe_prefix(PROMPT, 2)])], dim=1)
    second = model.generate(
        second_prompt, cache=first.cache, max_new_tokens=tokens, logits_processor=restrict,
        eos_token_id=None, **sampling,
    )  # fmt: skip
    theirs = torch.stack([first.sequences[0, -tokens:], second[0, -tokens:]])
    assert torch.equal(ours[0].flatten(1) + tiny_config.image_token_range[0], theirs)


def test_registered_task_loads_a_saved_checkpoint(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    pipe = pipeline("text-to-video", model=str(tmp_path), device="cpu")
    assert isinstance(pipe, FlashVideoPipeline)
    out = pipe(PROMPT, num_frames=2, key_frame_spacing=1, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 2, 16, 16, 3)
    again = FlashVideoPipeline.from_pretrained(tmp_path)
    pil = again(PROMPT, num_frames=2, key_frame_spacing=1, output_type="pil")
    assert len(pil.frames) == 1 and pil.frames[0][0].size == (16, 16)


def test_latent_output_is_the_codes_the_frames_decode_from(tiny_pipeline, tiny_config):
    call = dict(num_frames=5, key_frame_spacing=2, generator=None)
    frames = tiny_pipeline(PROMPT, **{**call, "generator": torch.Generator().manual_seed(3)})
    latent = tiny_pipeline(PROMPT, **{**call, "generator": torch.Generator().manual_seed(3)}, output_type="latent")
    grid = tiny_config.code_grid_size
    assert latent.frames.shape == (1, 5, grid, grid) and latent.frames.dtype == torch.long
    assert latent.stats.decode.frames == 0  # the VQ model did not run
    np.testing.assert_array_equal(codes_to_frames(tiny_pipeline.vqvae, latent.frames), frames.frames)


def test_callback_sees_every_frame_at_its_time_index(tiny_pipeline):
    seen = []
    tiny_pipeline(
        PROMPT, num_frames=6, key_frame_spacing=5, callback=lambda stage, index, frames: seen.append((stage, index, frames.shape))
    )
    assert seen == [("key_frames", 0, (1, 16, 16, 3)), ("key_frames", 5, (1, 16, 16, 3))] + [
        ("interpolation", i, (1, 16, 16, 3)) for i in range(1, 5)
    ]
    # Two pairs, then a recursive level: every frame of the 9-frame clip once, at its place in the clip.
    seen.clear()
    tiny_pipeline(
        PROMPT, num_frames=9, key_frame_spacing=2, recursive_spacings=[2],
        callback=lambda stage, index, frames: seen.append((stage, index)),
    )  # fmt: skip
    assert seen == [("key_frames", 0), ("key_frames", 4), ("key_frames", 8)] + [
        ("interpolation", t) for t in (2, 6, 1, 3, 5, 7)
    ]


def test_hub_ready_save_declares_the_custom_pipeline(tiny_pipeline, tmp_path):
    import json

    before = tiny_pipeline.model.config.to_dict()
    tiny_pipeline.save_pretrained(tmp_path, hub_ready=True)
    assert tiny_pipeline.model.config.to_dict() == before  # the live pipeline is left as it was
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"]["text-to-video"]["impl"] == "pipeline_flashvideo.FlashVideoPipeline"
    for name in ("pipeline_flashvideo.py", "processing_flashvideo.py", "frame_sampler.py", "redundant_free.py"):
        assert (tmp_path / name).is_file(), name
    pipe = pipeline("text-to-video", model=str(tmp_path), trust_remote_code=True, device="cpu")
    assert type(pipe).__name__ == "FlashVideoPipeline"
    assert pipe(PROMPT, num_frames=2, key_frame_spacing=1).frames.shape == (1, 2, 16, 16, 3)


def test_guidance_feeds_an_unconditional_stream_beside_the_prompt(tiny_pipeline, tiny_processor, tiny_config):
    tokens = tiny_config.tokens_per_frame
    recorder = FeedRecorder(tiny_pipeline.model)
    out = tiny_pipeline(
        PROMPT, num_frames=2, interpolate=False, guidance_scale=3.0, negative_prompt="a blue square",
        speculative=False, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    recorder.remove()
    calls = [c[0].tolist() for c in recorder.calls]
    assert len(calls) == 2 * 2 * (1 + tokens)  # every call of the unguided loop, twice
    text, negative = tiny_processor.encode_text(PROMPT), tiny_processor.encode_text("a blue square")
    for frame in range(2):
        block = calls[frame * 2 * (1 + tokens) : (frame + 1) * 2 * (1 + tokens)]
        serial = tiny_config.serial_token_id(frame + 1)
        assert block[0] == text + [serial] and block[1] == negative + [serial]
        assert all(block[i] == block[i + 1] for i in range(2, len(block), 2))  # the same codes, to both streams
    assert out.stats.key_frames.model_calls == 2 * 2 * (1 + tokens)


def test_guided_greedy_frame_is_the_argmax_of_the_guided_log_probabilities(tiny_pipeline, tiny_processor, tiny_config):
    scale, tokens = 2.5, tiny_config.tokens_per_frame
    ours = tiny_pipeline.generate_key_frames([PROMPT], 1, guidance_scale=scale, do_sample=False)[0, 0]
    model, (low, high) = tiny_pipeline.model, tiny_config.image_token_range
    streams = [torch.tensor([tiny_processor.keyframe_prefix(PROMPT, 1)]), torch.tensor([[tiny_config.serial_token_id(1)]])]
    caches, expected = [None, None], []
    with torch.no_grad():
        for _ in range(tokens):
            log_probs = []
            for index, ids in enumerate(streams):
                output = model(ids, cache=caches[index], use_cache=True)
                caches[index] = output.cache
                log_probs.append(output.logits[0, -1].float().log_softmax(-1))
            conditional, unconditional = log_probs
            guided = unconditional + scale * (conditional - unconditional)
            token = low + int(guided[low:high].argmax())
            expected.append(token)
            streams = [torch.tensor([[token]])] * 2
    assert (ours.flatten() + low).tolist() == expected
    unguided = tiny_pipeline.generate_key_frames([PROMPT], 1, do_sample=False)[0, 0]
    assert not torch.equal(ours, unguided)  # a random model's text does change its logits


def test_guidance_scale_comes_from_the_generation_config(tiny_pipeline):
    def key_frames(**kwargs):
        return tiny_pipeline.generate_key_frames([PROMPT], 1, do_sample=False, **kwargs)

    unguided, guided = key_frames(), key_frames(guidance_scale=2.0)
    config = tiny_pipeline.model.generation_config
    config.guidance_scale = 2.0
    try:
        assert torch.equal(key_frames(), guided)
        assert torch.equal(key_frames(guidance_scale=1.0), unguided)  # the call's value wins
        config.guidance_scale = 0.5
        with pytest.raises(ValueError, match=r"guidance_scale .* \(from the key-frame model's generation_config\)"):
            tiny_pipeline(PROMPT, num_frames=6)
    finally:
        config.guidance_scale = None


def test_the_prompt_is_tokenized_once_per_call(tiny_pipeline, monkeypatch):
    calls = []
    encode_text = tiny_pipeline.processor.encode_text
    monkeypatch.setattr(tiny_pipeline.processor, "encode_text", lambda text: (calls.append(text), encode_text(text))[1])
    generator = torch.Generator().manual_seed(0)
    tiny_pipeline(PROMPT, num_frames=9, key_frame_spacing=2, recursive_spacings=[2], generator=generator)
    assert calls == [PROMPT]


def test_init_does_no_loading_and_the_factory_path_loads_in_from_pretrained(tiny_pipeline, tmp_path, monkeypatch):
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = []
    from_pretrained = FlashVideoPipeline.from_pretrained.__func__
    monkeypatch.setattr(
        FlashVideoPipeline, "from_pretrained",
        classmethod(lambda cls, *args, **kwargs: (loaded.append(args[0]), from_pretrained(cls, *args, **kwargs))[1]),
    )  # fmt: skip
    pipe = pipeline("text-to-video", model=str(tmp_path), device="cpu", show_progress=False, num_frames=6)
    assert loaded == [str(tmp_path)] and isinstance(pipe.vqvae, type(tiny_pipeline.vqvae))
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 6, 16, 16, 3)  # num_frames given to the pipeline applies to its calls
    # Given its components, the constructor reads no file.
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: pytest.fail("__init__ opened a file"))
    FlashVideoPipeline(model=pipe.model, processor=pipe.processor, vqvae=pipe.vqvae, device="cpu")


def test_no_import_cycle_between_the_hub_and_the_pipeline():
    import ast
    import inspect

    import flashvideo.hub

    tree = ast.parse(inspect.getsource(flashvideo.hub))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "pipeline_flashvideo" not in imported
