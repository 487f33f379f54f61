"""The draft table of speculative decoding: what it counts, how it backs off, how it is saved, loaded and refused,
and how the pipeline uses it (the greedy token-identity check with a table is in test_speculative.py)."""

import numpy as np
import pytest
import torch

from flashvideo import FlashVideoPipeline
from flashvideo.cli import main as cli_main
from flashvideo.draft_table import DRAFT_TABLE_FILE, CodeDraftTable
from flashvideo.frame_sampler import FrameSampler, build_logits_processor

from test_pipeline import PROMPT


def _grids(*frames: list[list[int]]) -> np.ndarray:
    """One clip `[1, frames, h, w]` from nested lists."""
    return np.array([frames], dtype=np.int64)


def test_fit_counts_the_commonest_code_per_context_smaller_code_on_ties():
    # 2x2 frames: only the bottom-right cell has both an above (top-right) and a left (bottom-left) neighbour.
    clips = np.concatenate([
        _grids([[0, 1], [2, 3]], [[0, 1], [2, 3]], [[0, 1], [2, 4]]),  # (above 1, left 2) -> 3, 3, 4
        _grids([[0, 5], [6, 7]], [[0, 5], [6, 8]], [[0, 5], [6, 7]]),  # (5, 6) -> 7, 8, 7
        _grids([[0, 1], [9, 4]], [[0, 1], [9, 2]], [[0, 1], [9, 9]]),  # (1, 9) -> 4, 2, 9: a three-way tie
    ])  # fmt: skip
    table = CodeDraftTable.fit(clips, vocab_size=10, reference_gaps=(1,))
    vocab = 10
    assert table.neighbours == {1 * vocab + 2: 3, 5 * vocab + 6: 7, 1 * vocab + 9: 2}
    assert table.draft(None, above=1, left=2) == 3
    assert table.draft(None, above=1, left=9) == 2  # the smallest of the tied codes
    # With the reference cell (the same cell one frame earlier): (3, 1, 2) -> 3 then 4 is a tie -> 3; (7, 5, 6) -> 8.
    assert table.draft(3, above=1, left=2, gap=1) == 3
    assert table.draft(7, above=5, left=6, gap=1) == 8
    assert table.draft(8, above=5, left=6, gap=1) == 7
    # Backing off: an unseen reference falls back to the neighbours; unseen neighbours give nothing.
    assert table.draft(0, above=5, left=6, gap=1) == 7
    assert table.draft(None, above=0, left=0) is None
    assert table.draft(3, above=None, left=2, gap=1) is None
    assert table.num_clips == 3 and table.reference_gaps == (1,)


def test_the_nearest_fitted_gap_is_used():
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 4, size=(20, 8, 4, 4))
    table = CodeDraftTable.fit(clips, vocab_size=4, reference_gaps=(1, 5))
    assert table._table_for_gap(2) is table.with_reference[1]
    assert table._table_for_gap(4) is table.with_reference[5]
    assert table._table_for_gap(3) is table.with_reference[1]  # a tie: the smaller gap
    assert table._table_for_gap(40) is table.with_reference[5]


@pytest.mark.parametrize(
    "codes, vocab_size, gaps, message",
    [
        (np.zeros((2, 3, 4)), 8, (1,), r"codes must be \[clips, frames, h, w\]"),
        (np.full((1, 3, 2, 2), 8), 8, (1,), r"codes must be in \[0, 7\]"),
        (np.zeros((1, 3, 2, 2)), 8, (0,), "reference_gaps must be positive"),
        (np.zeros((1, 3, 2, 2)), 8, (3,), "a gap of 3 frames needs clips of more than 3 frames"),
    ],
)
def test_fit_refuses_bad_input(codes, vocab_size, gaps, message):
    with pytest.raises(ValueError, match=message):
        CodeDraftTable.fit(codes, vocab_size, gaps)


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    table = CodeDraftTable.fit(rng.integers(0, 512, size=(6, 6, 16, 16)), vocab_size=512, reference_gaps=(1, 5))
    path = table.save_pretrained(tmp_path)
    assert path == tmp_path / DRAFT_TABLE_FILE
    loaded = CodeDraftTable.from_pretrained(tmp_path, vocab_size=512)
    assert loaded.neighbours == table.neighbours and loaded.with_reference == table.with_reference
    assert loaded.vocab_size == 512 and loaded.num_clips == 6
    assert CodeDraftTable.from_pretrained(tmp_path / "elsewhere") is None  # no file: no table


def test_a_bad_file_is_refused_with_a_reason(tmp_path):
    table = CodeDraftTable.fit(np.random.default_rng(2).integers(0, 8, size=(2, 3, 4, 4)), 8, (1,))
    table.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="fitted for 8 image codes, but the image tokenizer has 16"):
        CodeDraftTable.from_pretrained(tmp_path, vocab_size=16)
    path = tmp_path / DRAFT_TABLE_FILE
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        CodeDraftTable.from_pretrained(tmp_path)
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a FlashVideo draft table"):
        CodeDraftTable.from_pretrained(tmp_path)
    contexts = np.array([5], dtype=np.int32)
    save_file(
        {"neighbours.contexts": contexts, "neighbours.codes": np.array([9], dtype=np.int16)}, str(path),
        metadata={"format": "1", "vocab_size": "8"},
    )  # fmt: skip
    with pytest.raises(ValueError, match="outside the 8 image codes"):
        CodeDraftTable.from_pretrained(tmp_path)


def test_the_sampler_drafts_from_the_table_and_backs_off(tiny_model):
    """Drafts for the cells with a neighbour above and to the left come from the table; the rest from the
    reference cell (or, without one, the row above)."""
    config = tiny_model.config
    start = config.image_token_range[0]
    grid = config.code_grid_size
    table = CodeDraftTable(config.image_vocab_size, neighbours={}, with_reference={})
    table.neighbours = {(7 * table.vocab_size) + 7: 11}  # above 7, left 7 -> 11
    sampler = FrameSampler(tiny_model, build_logits_processor(config.image_token_range), draft_table=table)
    tokens = [start + 7] * (grid + 1) + [0] * (grid * grid - grid - 1)  # the first row and one more cell decided
    reference = [start + 3] * (grid * grid)
    assert sampler._draft(tokens, grid + 1, [], grid + 1, reference, 1) == start + 11  # above 7, left 7
    assert sampler._draft(tokens, grid + 1, [], 2 * grid, reference, 1) == start + 3  # column 0: the reference
    window = [start + 11]
    assert sampler._draft(tokens, grid + 1, window, grid + 2, reference, 1) == start + 3  # left is 11: unseen
    assert sampler._draft(tokens, grid + 1, [], grid + 1, None, None) == start + 11
    assert sampler._draft(tokens, grid + 1, [], 2 * grid, None, None) == start + 7  # the row above


def test_the_pipeline_saves_loads_and_defaults_to_its_table(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="draft_source='code_table' needs a draft table"):
        tiny_pipeline(PROMPT, num_frames=6, draft_source="code_table")
    plain = tiny_pipeline(PROMPT, num_frames=6, generator=torch.Generator().manual_seed(0))
    assert not any(source.startswith("code_table") for source in plain.stats.key_frames.drafts_by_source)
    codes = np.random.default_rng(3).integers(0, 60, size=(8, 6, 4, 4))
    tiny_pipeline.draft_table = CodeDraftTable.fit(codes, 60, (1, 5))
    tiny_pipeline.save_pretrained(tmp_path)
    assert (tmp_path / DRAFT_TABLE_FILE).is_file()
    loaded = FlashVideoPipeline.from_pretrained(tmp_path, device="cpu", show_progress=False)
    assert loaded.draft_table.neighbours == tiny_pipeline.draft_table.neighbours
    out = loaded(PROMPT, num_frames=6, generator=torch.Generator().manual_seed(0))  # default: the table
    sources = {**out.stats.key_frames.drafts_by_source, **out.stats.interpolation.drafts_by_source}
    assert {"code_table+row_above", "code_table+previous_key_frame", "code_table+previous_frame"} <= set(sources)
    other = loaded(PROMPT, num_frames=6, draft_source="previous_frame", generator=torch.Generator().manual_seed(0))
    assert "previous_key_frame" in other.stats.key_frames.drafts_by_source
    with pytest.raises(ValueError, match="fitted for 61 image codes, but the model samples from image_vocab_size=60"):
        FlashVideoPipeline(
            model=loaded.model, processor=loaded.processor, vqvae=loaded.vqvae,
            draft_table=CodeDraftTable(61, {}, {}),
        )  # fmt: skip


def test_the_cli_fits_a_table_for_a_checkpoint(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path)
    arguments = ["draft-table", str(tmp_path), "--num-clips", "3", "--num-frames", "6"]
    assert cli_main([*arguments, "--gaps", "1", "5"]) == 0
    table = CodeDraftTable.from_pretrained(tmp_path, vocab_size=60)
    assert table.num_clips == 3 and table.reference_gaps == (1, 5) and table.neighbours
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"--gaps must be an integer in \[1, 5\] \(--num-frames - 1\), got 6"):
        cli_main([*arguments, "--gaps", "6"])
