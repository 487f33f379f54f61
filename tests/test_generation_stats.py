"""`GenerationStats` formats itself once (`summary()`, `to_dict()`): the CLI, the Space and the benchmarks show that."""

import json

from flashvideo import GenerationStats
from flashvideo.pipeline_flashvideo import StageStats


def _stats() -> GenerationStats:
    return GenerationStats(
        key_frames=StageStats(frames=4, tokens_sampled=64, model_calls=20, seconds=0.5, tokens_drafted=60,
                              tokens_accepted=44, drafts_by_source={"previous_frame": [60, 44]}),
        interpolation=StageStats(frames=12, tokens_sampled=150, tokens_inherited=42, model_calls=30, seconds=1.0),
        decode=StageStats(seconds=0.5),
    )  # fmt: skip


def test_summary_is_one_line_with_every_stage():
    summary = _stats().summary()
    assert summary == str(_stats()) and "\n" not in summary
    assert summary == (
        "key frames: 4 frames, 64 tokens sampled, 20 calls, drafts 44/60 accepted, 0.50 s; interpolation: 12 frames, "
        "150 sampled / 42 inherited, 30 calls, 1.00 s; decode 0.50 s; 8.0 frames/s"
    )


def test_to_dict_is_json_with_stages_and_totals():
    stats = _stats().to_dict()
    assert json.loads(json.dumps(stats)) == stats
    assert stats["key_frames"]["drafts_by_source"] == {"previous_frame": [60, 44]}
    assert stats["interpolation"]["tokens_inherited"] == 42 and stats["decode"]["seconds"] == 0.5
    assert stats["tokens_sampled"] == 214 and stats["tokens_inherited"] == 42
    assert stats["total_seconds"] == 2.0 and stats["frames_per_second"] == 8.0
    assert stats["inherited_share"] == round(42 / 256, 4)
    assert GenerationStats().to_dict()["inherited_share"] == 0.0
