import pytest

from flashvideo import FlashVideoConfig


def test_default_layout_is_contiguous_and_disjoint():
    config = FlashVideoConfig()
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert config.serial_token_range == (3, 3 + config.max_frames)
    assert config.text_token_range == (config.serial_token_range[1], config.serial_token_range[1] + 1024)
    assert config.image_token_range == (config.text_token_range[1], config.text_token_range[1] + 512)
    assert config.vocab_size == config.image_token_range[1]
    assert config.value_dim == 2 * config.hidden_size
    assert config.tokens_per_frame == 256
    assert config.serial_token_id(1) == 3 and config.serial_token_id(config.max_frames) == 2 + config.max_frames


def test_explicit_layout_is_kept_and_round_trips(tmp_path):
    config = FlashVideoConfig(
        vocab_size=30000, serial_token_start=10, text_token_start=100, image_token_start=10000,
        image_vocab_size=20000, text_vocab_size=5000,
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    loaded = FlashVideoConfig.from_pretrained(tmp_path)
    assert loaded.image_token_range == (10000, 30000)
    assert loaded.text_token_range == (100, 5100)
    assert loaded.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"hidden_size": -8}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"intermediate_size": -1}, "intermediate_size"),
        ({"value_dim": 30, "num_attention_heads": 4}, "num_attention_heads"),
        ({"rms_norm_eps": 0.0}, "rms_norm_eps"),
        ({"text_token_start": 20}, "text_token_start"),
        ({"image_token_start": 100}, "image_token_start"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"pad_token_id": 5, "serial_token_start": 3}, "pad_token_id"),
        ({"code_grid_size": 7}, "code_grid_size"),
        ({"decay_exponents": [5, 6, 7]}, "decay_exponents"),  # 4 heads
        ({"decay_exponents": [5, 6, 0, 8]}, "decay_exponents"),
        ({"decay_exponents": [5, 6, 7, 60]}, "decay_exponents"),
        ({"code_position_embeddings": "yes"}, "code_position_embeddings"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FlashVideoConfig(**kwargs)


def test_serial_token_id_range():
    config = FlashVideoConfig(max_frames=4)
    with pytest.raises(ValueError, match=r"frame_number must be in \[1, 4\]"):
        config.serial_token_id(5)
    with pytest.raises(ValueError, match="frame_number"):
        config.serial_token_id(0)
