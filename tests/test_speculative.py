"""Lossless speculative frame decoding: greedy clips token-identical to plain decoding, sampled codes exactly the
model's distribution (χ² against probabilities enumerated from the model), and the calls it saves."""

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoPipeline
from flashvideo import speculative
from flashvideo.draft_table import CodeDraftTable
from flashvideo.frame_sampler import FrameSampler, build_logits_processor

from test_pipeline import PROMPT, FeedRecorder


OTHER_PROMPT = "a blue square moving up"  # as many tokens as PROMPT: the two share a batch


@pytest.fixture
def float64_pipeline(tiny_model, tiny_processor, tiny_vq):
    """Separate key-frame and interpolation models in float64, so that a verify call's parallel form and the
    recurrent step agree far below any gap between the two best logits (greedy comparisons are then exact)."""
    key_frame_model = tiny_model.double()
    interpolation_model = copy.deepcopy(key_frame_model)
    torch.manual_seed(3)
    for parameter in interpolation_model.parameters():
        parameter.data.add_(0.02 * torch.randn_like(parameter))
    return FlashVideoPipeline(
        model=key_frame_model, processor=tiny_processor, vqvae=tiny_vq, interpolation_model=interpolation_model,
        device="cpu",
        show_progress=False,
    )  # fmt: skip


GREEDY_CASES = {
    "key frames, batch 2": dict(prompt=[PROMPT, OTHER_PROMPT], num_frames=4, interpolate=False),
    "interpolation, batch of 2 prompts x 2 pairs": dict(prompt=[PROMPT, OTHER_PROMPT], num_frames=11, redundant_free=False),
    "redundant-free 0.5": dict(prompt=[PROMPT, OTHER_PROMPT], num_frames=11, inherit_ratio=0.5),
    "first frame given": dict(prompt=PROMPT, num_frames=6, first_frame=np.full((16, 16, 3), 90, np.uint8)),
    "guidance": dict(prompt=PROMPT, num_frames=6, guidance_scale=2.0, negative_prompt="a blue square"),
    "recursive": dict(prompt=PROMPT, num_frames=9, key_frame_spacing=4, recursive_spacings=(2,)),
}


@pytest.mark.parametrize("case", list(GREEDY_CASES))
@pytest.mark.parametrize(
    "options",
    [dict(), dict(lockstep=True), dict(num_draft_tokens=3, draft_source="row_above"), dict(draft_source="code_table")],
    ids=["default", "lockstep", "row above", "code table"],
)
def test_greedy_speculative_clip_is_token_identical_to_plain_decoding(float64_pipeline, case, options):
    arguments = dict(GREEDY_CASES[case], do_sample=False)
    arguments.setdefault("key_frame_spacing", 5)
    prompt = arguments.pop("prompt")
    if isinstance(prompt, list):
        arguments["batch_size"] = len(prompt)  # the prompts in one batch, one output each
    clips = {}
    for speculative_on in (False, True):
        codes = []
        hook = float64_pipeline.postprocess
        float64_pipeline.postprocess = lambda outputs, **kw: (codes.append(outputs["codes"]), hook(outputs, **kw))[1]
        out = float64_pipeline(
            prompt, **arguments, speculative=speculative_on, generator=torch.Generator().manual_seed(4),
            **(options if speculative_on else {}),
        )  # fmt: skip
        float64_pipeline.postprocess = hook
        clips[speculative_on] = (torch.cat(codes), (out[0] if isinstance(out, list) else out).stats)
        if not speculative_on and options.get("draft_source") == "code_table":
            # A table fitted on the plain clip with 30% of its codes replaced at random: drafts right and wrong.
            fitted = clips[False][0].clone()
            noise = torch.Generator().manual_seed(5)
            replaced = torch.rand(fitted.shape, generator=noise) < 0.3
            fitted[replaced] = torch.randint(0, 60, (int(replaced.sum()),), generator=noise)
            gaps = (1, 5) if fitted.shape[1] > 5 else (1,)
            float64_pipeline.draft_table = CodeDraftTable.fit(fitted, 60, gaps)
    (plain, plain_stats), (fast, fast_stats) = clips[False], clips[True]
    assert torch.equal(fast, plain)
    stages = ("key_frames", "interpolation")
    for stage in stages:
        plain_stage, fast_stage = getattr(plain_stats, stage), getattr(fast_stats, stage)
        assert fast_stage.tokens_sampled == plain_stage.tokens_sampled
        assert fast_stage.tokens_inherited == plain_stage.tokens_inherited
        assert plain_stage.tokens_drafted == 0 and fast_stage.tokens_accepted <= fast_stage.tokens_drafted
        assert fast_stage.model_calls <= plain_stage.model_calls
        assert sum(drafted for drafted, _ in fast_stage.drafts_by_source.values()) == fast_stage.tokens_drafted
    drafted = sum(getattr(fast_stats, stage).tokens_drafted for stage in stages)
    accepted = sum(getattr(fast_stats, stage).tokens_accepted for stage in stages)
    assert 0 < drafted and accepted < drafted  # drafts refused…
    assert accepted > 0 or options  # …and taken (the default options, at least)
    assert sum(getattr(fast_stats, s).model_calls for s in stages) < sum(getattr(plain_stats, s).model_calls for s in stages)


def test_recursive_interpolation_feeds_every_adjacent_pair_and_orders_frames_in_time(tiny_pipeline, tiny_processor, tiny_config):
    """2 key frames, spacing 3 (2 inserted), then spacing 2 (1 more between each of the 3 adjacent pairs): 7 frames."""
    levels = []
    interpolate = tiny_pipeline.interpolate

    def spy(prompts, frames, num_inserted, *args, **kwargs):
        out = interpolate(prompts, frames, num_inserted, *args, **kwargs)
        levels.append((frames, num_inserted, out))
        return out

    tiny_pipeline.interpolate = spy
    recorder = FeedRecorder(tiny_pipeline.interpolation_model)
    tiny_pipeline(
        PROMPT, num_frames=7, key_frame_spacing=3, recursive_spacings=[2], speculative=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    recorder.remove()
    (key_frames, first_inserted, first), (middle, second_inserted, final) = levels
    assert (first_inserted, second_inserted) == (2, 1)
    assert key_frames.shape[1] == 2 and torch.equal(middle, first) and first.shape[1] == 4 and final.shape[1] == 7
    text, sn = tiny_processor.encode_text(PROMPT), tiny_config.serial_token_id
    first_ids = first[0].flatten(1) + tiny_config.image_token_range[0]  # the frames are codes until fed
    # The second level's first call: one batch of the 3 adjacent pairs of the first level's 4 frames.
    level_two = [call for call in recorder.calls if call.shape[0] == 3]
    assert level_two[0].tolist() == [
        text + [sn(1)] + first_ids[i].tolist() + text + [sn(3)] + first_ids[i + 1].tolist() + text + [sn(2)]
        for i in range(3)
    ]
    # Time order: the first level's frames at 0, 2, 4, 6, each new frame between its pair.
    assert torch.equal(final[0, ::2], first[0])
    frame = tiny_config.tokens_per_frame
    fed_one_at_a_time = torch.stack([call[:, 0] for call in level_two[1 : 1 + frame]], dim=1)
    assert torch.equal(final[0, 1::2].flatten(1) + tiny_config.image_token_range[0], fed_one_at_a_time)


# ---------------------------------------------------------------------------------------------------------------
# Exactly the model's distribution


def _peaked_tiny_model() -> FlashVideoForCausalLM:
    """A float64 model over 3 image codes with a 2×2 grid, its output scaled up so that its distributions are far from
    uniform (and differ by position): a wrong acceptance rule then shows at once."""
    config = FlashVideoConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, text_vocab_size=8,
        image_vocab_size=3, max_frames=4, image_size=8, code_grid_size=2, chunk_size=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = FlashVideoForCausalLM(config).double().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)
    return model


def _enumerated_distribution(model, prefixes, processor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Every sequence of two 4-code frames and its probability under the processed distributions."""
    low, _ = model.config.image_token_range
    codes = list(itertools.product(range(model.config.image_vocab_size), repeat=8))
    frames = torch.tensor(codes) + low
    ids = torch.cat([prefixes[0].expand(len(codes), -1), frames[:, :4], prefixes[1].expand(len(codes), -1), frames[:, 4:]], 1)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
    image_positions = [prefixes[0].shape[1] - 1 + i for i in range(4)]
    image_positions += [prefixes[0].shape[1] + 4 + prefixes[1].shape[1] - 1 + i for i in range(4)]
    log_probability = torch.zeros(len(codes), dtype=torch.float64)
    for column, position in enumerate(image_positions):
        scores = processor(None, logits[:, position])
        log_probability += scores.log_softmax(-1).gather(1, frames[:, column : column + 1])[:, 0]
    return codes, log_probability.exp()


def _chi_square_p_values(samples: np.ndarray, codes, probabilities: torch.Tensor) -> dict[str, float]:
    """p-values of χ² goodness of fit for each position's marginal and for each (frame 1, frame 2) cell pair."""
    exact = {}
    for code, probability in zip(codes, probabilities.tolist()):
        for name, key in _statistics(np.array(code)):
            exact.setdefault(name, {}).setdefault(key, 0.0)
            exact[name][key] += probability
    observed = {}
    for row in samples:
        for name, key in _statistics(row):
            observed.setdefault(name, {}).setdefault(key, 0)
            observed[name][key] += 1
    p_values = {}
    for name, cells in exact.items():
        impossible = [key for key, probability in cells.items() if probability < 1e-12]
        if any(observed[name].get(key, 0) for key in impossible):  # drew an outcome of probability 0
            p_values[name] = 0.0
            continue
        keys = [key for key, probability in cells.items() if probability * len(samples) >= 5]
        rest = [key for key in cells if key not in keys and key not in impossible]
        expected = [cells[key] * len(samples) for key in keys] + ([sum(cells[k] for k in rest) * len(samples)] if rest else [])
        counts = [observed[name].get(key, 0) for key in keys] + ([sum(observed[name].get(k, 0) for k in rest)] if rest else [])
        if len(counts) > 1:
            expected = np.array(expected) * sum(counts) / sum(expected)
            p_values[name] = float(chisquare(counts, expected).pvalue)
    return p_values


def _statistics(row):
    for position in range(8):
        yield f"position {position}", int(row[position])
    for cell in range(4):
        yield f"cell {cell} in both frames", (int(row[cell]), int(row[4 + cell]))


def _speculative_draws(
    model, processor, prefixes, num_rows: int, seed: int, draft_table: CodeDraftTable | None = None
) -> tuple[np.ndarray, FrameSampler]:
    sampler = FrameSampler(
        model, processor, do_sample=True, generator=torch.Generator().manual_seed(seed), num_draft_tokens=3,
        draft_table=draft_table,
    )  # fmt: skip
    first = sampler.sample_frame(prefixes[0].expand(num_rows, -1), 4)  # drafts from inside the frame
    second = sampler.sample_frame(prefixes[1].expand(num_rows, -1), 4, reference=first, reference_gap=1)  # frame 1
    low, _ = model.config.image_token_range
    return (torch.cat([first, second], dim=1) - low).numpy(), sampler


@pytest.fixture(scope="module")
def distribution_setup():
    model = _peaked_tiny_model()
    processor = build_logits_processor(model.config.image_token_range, temperature=1.3, top_k=2)
    text = [model.config.text_token_start + 1, model.config.text_token_start + 4]
    prefixes = [torch.tensor([text + [model.config.serial_token_id(number)]]) for number in (1, 2)]
    codes, probabilities = _enumerated_distribution(model, prefixes, processor)
    return model, processor, prefixes, codes, probabilities


# A draft table for the 2×2 grid of 3 codes: the last cell (the one with neighbours above and left) drafted from
# it, code 2 whatever the neighbours, except after the reference cell 0 (then 1): drafts unlike the frames' own.
_DRAFT_TABLE = CodeDraftTable(
    3, neighbours={above * 3 + left: 2 for above in range(3) for left in range(3)},
    with_reference={1: {(reference * 3 + above) * 3 + left: 1 for reference in (0,) for above in range(3)
                        for left in range(3)}},
)  # fmt: skip


@pytest.mark.parametrize("draft_table", [None, _DRAFT_TABLE], ids=["frame drafts", "draft table"])
def test_speculative_samples_follow_the_model_distribution(distribution_setup, draft_table):
    model, processor, prefixes, codes, probabilities = distribution_setup
    samples, sampler = _speculative_draws(model, processor, prefixes, num_rows=4000, seed=0, draft_table=draft_table)
    p_values = _chi_square_p_values(samples, codes, probabilities)
    report = ", ".join(f"{name}: p={p:.3g}" for name, p in p_values.items())
    # 12 tests at once: each at 1e-3 (the draws are seeded, so the test is deterministic).
    assert min(p_values.values()) > 1e-3, report
    counts = sampler.counts
    assert 0.2 < counts.acceptance_rate < 0.95, f"acceptance {counts.accepted}/{counts.drafted}; {report}"
    assert counts.model_calls < 8 + 2  # fewer calls than one per code: drafts were accepted in bulk
    print(f"χ² p-values over 4000 draws: {report}; acceptance {counts.acceptance_rate:.2f}")


@pytest.mark.parametrize(
    "wrong_rule",
    [
        ("acceptance_probability", lambda probabilities: torch.ones_like(probabilities)),  # always accept
        ("acceptance_probability", lambda probabilities: probabilities.sqrt()),  # accept too often
        ("residual_distribution", lambda probabilities, drafts: probabilities),  # rejected draft not removed
    ],
    ids=["always accept", "accept with sqrt(p)", "resample from p"],
)
def test_a_wrong_acceptance_rule_is_caught(distribution_setup, monkeypatch, wrong_rule):
    model, processor, prefixes, codes, probabilities = distribution_setup
    monkeypatch.setattr(speculative, *wrong_rule)
    samples, _ = _speculative_draws(model, processor, prefixes, num_rows=4000, seed=0)
    p_values = _chi_square_p_values(samples, codes, probabilities)
    report = ", ".join(f"{name}: p={p:.3g}" for name, p in p_values.items())
    assert min(p_values.values()) < 1e-6, report


def test_new_arguments_are_validated_up_front(tiny_pipeline):
    cases = {
        "num_draft_tokens": dict(num_draft_tokens=0),
        "draft_source": dict(draft_source="the future"),
        "speculative": dict(speculative="yes"),
        "lockstep": dict(lockstep=1),
        "recursive_spacings": dict(recursive_spacings=(1,)),
    }
    for name, arguments in cases.items():
        with pytest.raises(ValueError, match=name):
            tiny_pipeline(PROMPT, num_frames=6, **arguments)
    with pytest.raises(ValueError, match=r"num_draft_tokens must be None or an integer in \[1, 16\]"):
        tiny_pipeline(PROMPT, num_frames=6, num_draft_tokens=17)
    with pytest.raises(ValueError, match="times the recursive spacings"):
        tiny_pipeline(PROMPT, num_frames=16, key_frame_spacing=5, recursive_spacings=(2,))


def test_draw_from_follows_the_probabilities_and_never_draws_a_zero():
    probabilities = torch.tensor([[0.0, 2.0, 0.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0, 0.0]])  # unnormalised
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    drawn = speculative.draw_from(probabilities[[0]].expand(20000, -1), uniforms)
    counts = torch.bincount(drawn, minlength=5).numpy()
    assert counts[0] == counts[2] == 0
    p_value = chisquare(counts[[1, 3, 4]], 20000 * np.array([0.5, 0.25, 0.25])).pvalue
    assert p_value > 1e-3, (counts, p_value)
    edges = torch.tensor([0.0, 0.999999])
    assert speculative.draw_from(probabilities[[1, 1]], edges).tolist() == [0, 0]
    assert speculative.draw_from(probabilities[[0, 0]], edges).tolist() == [1, 4]


def test_drafts_per_call_default_per_stage(tiny_pipeline):
    from flashvideo.pipeline_flashvideo import INTERPOLATION_DRAFT_TOKENS, KEY_FRAME_DRAFT_TOKENS

    assert (KEY_FRAME_DRAFT_TOKENS, INTERPOLATION_DRAFT_TOKENS) == (8, 4)
    assert tiny_pipeline._sampler(tiny_pipeline.model).num_draft_tokens == 8
    assert tiny_pipeline._sampler(tiny_pipeline.model, stage="interpolation").num_draft_tokens == 4
    assert tiny_pipeline._sampler(tiny_pipeline.model, num_draft_tokens=3, stage="interpolation").num_draft_tokens == 3
    assert tiny_pipeline._sampler(tiny_pipeline.model, speculative=False).num_draft_tokens == 0
    out = tiny_pipeline(PROMPT, num_frames=6, generator=torch.Generator().manual_seed(0))
    assert out.stats.key_frames.tokens_drafted > 0 and out.stats.interpolation.tokens_drafted > 0


def test_look_ahead_drafts_follow_a_refusal_and_can_be_turned_off(distribution_setup, tiny_pipeline):
    """After a refused draft, the positions the call judged beyond it are drafted from that call's argmax (counted
    as "look_ahead"); the distribution test above runs with them on (the sampler's default)."""
    model, processor, prefixes, *_ = distribution_setup
    _, sampler = _speculative_draws(model, processor, prefixes, num_rows=400, seed=1)
    assert sampler.look_ahead_start == 0
    drafted, accepted = sampler.counts.drafts_by_source["look_ahead"]
    assert 0 < accepted <= drafted
    # and the sampler's cache keeps only the call it may still rewind into (older records would hold their states)
    assert len(sampler.stream.cache.records) == 1 and sampler.stream.cache.max_rollback_tokens == 0
    assert tiny_pipeline._sampler(tiny_pipeline.model).look_ahead_start == 1  # key frames: the table first
    assert tiny_pipeline._sampler(tiny_pipeline.model, stage="interpolation").look_ahead_start == 0
    tiny_pipeline.look_ahead_drafts = False
    try:
        assert tiny_pipeline._sampler(tiny_pipeline.model).look_ahead_start is None
        out = tiny_pipeline(PROMPT, num_frames=6, generator=torch.Generator().manual_seed(0))
        assert "look_ahead" not in out.stats.key_frames.drafts_by_source
    finally:
        tiny_pipeline.look_ahead_drafts = True
