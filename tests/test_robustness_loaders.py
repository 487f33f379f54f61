"""Loaders say what is wrong (issue 22, item 5): the processor's files and subfolders, local paths that do not exist,
configs of another model type or with fields of the wrong type, a processor layout that disagrees with a config."""

import json

import pytest

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM
from flashvideo.image_tokenizer import load_image_tokenizer
from flashvideo.processing_flashvideo import FlashVideoProcessor


@pytest.fixture
def saved_processor(tiny_processor, tiny_vq, tmp_path):
    """A checkpoint's processor files and its image tokenizer (`image_tokenizer/`, the pipeline's `vqvae`)."""
    folder = tmp_path / "checkpoint"
    tiny_processor.save_pretrained(folder)
    tiny_vq.save_pretrained(folder / "image_tokenizer")
    return folder


def _load(folder, name: str):
    """The loader of the file `name`: the image tokenizer's for `image_tokenizer/`, else the processor's."""
    if name.startswith("image_tokenizer/"):
        return load_image_tokenizer(folder)
    return FlashVideoProcessor.from_pretrained(folder)


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "name", ["processor_config.json", "text_tokenizer/tokenizer.json", "text_tokenizer/tokenizer_config.json",
             "image_tokenizer/config.json"],
)  # fmt: skip
def test_a_corrupt_processor_file_is_named(saved_processor, name):
    _truncate(saved_processor / name)
    with pytest.raises(ValueError, match=f"{saved_processor / name} is not valid JSON"):
        _load(saved_processor, name)


@pytest.mark.parametrize("name", ["text_tokenizer/tokenizer.json", "image_tokenizer/config.json"])
def test_a_missing_processor_file_is_named(saved_processor, name):
    (saved_processor / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{saved_processor / name} is missing"):
        _load(saved_processor, name)


def test_missing_image_tokenizer_weights_name_the_folder(saved_processor):
    for weights in (saved_processor / "image_tokenizer").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(OSError, match=f"Could not load VQModel from {saved_processor / 'image_tokenizer'}"):
        load_image_tokenizer(saved_processor)


@pytest.mark.parametrize("subfolder", ["../elsewhere", "/etc", "text_tokenizer/../../elsewhere", "link"])
def test_processor_subfolders_must_stay_inside_the_checkpoint(saved_processor, subfolder):
    outside = saved_processor.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    (saved_processor / "link").symlink_to(outside, target_is_directory=True)
    config_file = saved_processor / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["text_tokenizer_subfolder"] = subfolder
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="text_tokenizer_subfolder .* points outside the checkpoint"):
        FlashVideoProcessor.from_pretrained(saved_processor)


@pytest.mark.parametrize("path", ["/no/such/checkpoint", "./missing", "~/missing-flashvideo", "a/b/c"])
def test_a_local_path_that_does_not_exist_says_so(path):
    with pytest.raises(FileNotFoundError, match=f"{path!r} does not exist"):
        FlashVideoProcessor.from_pretrained(path)


def test_a_config_of_another_model_type_is_refused(tiny_config, tmp_path):
    tiny_config.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama', not 'flashvideo'"):
        FlashVideoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'llama'"):
        FlashVideoForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"rms_norm_eps": "x"}, "rms_norm_eps must be a finite number > 0"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be a finite number > 0"),
        ({"dtype": "float7"}, "dtype must be a torch dtype or its name"),
        ({"torch_dtype": "float7"}, "torch_dtype must be a torch dtype or its name"),
        ({"max_frames": "6"}, "max_frames must be a non-negative integer"),
        ({"pad_token_id": "0"}, "pad_token_id must be a non-negative integer"),
        ({"initializer_range": None}, "initializer_range must be a finite number >= 0"),
        ({"use_cache": "yes"}, "use_cache must be True or False"),
        ({"hidden_act": "swishy"}, "hidden_act must name one of transformers' activations"),
    ],
)
def test_config_fields_of_the_wrong_type_are_value_errors(values, named, tiny_config, tmp_path):
    with pytest.raises(ValueError, match=named):
        FlashVideoConfig(**values)
    tiny_config.save_pretrained(tmp_path)  # and the same from a config.json
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **values}))
    with pytest.raises(ValueError, match=named):
        FlashVideoConfig.from_pretrained(tmp_path)


def test_a_processor_layout_that_disagrees_with_the_config_is_named(tiny_processor, tiny_config):
    tiny_processor.layout.check_matches(tiny_config)
    other = FlashVideoConfig(**{**tiny_config.to_dict(), "max_frames": 8, "text_token_start": None,
                                "image_token_start": None, "vocab_size": None})  # fmt: skip
    with pytest.raises(ValueError, match="max_frames=6 but the model config has 8"):
        tiny_processor.layout.check_matches(other)


def test_a_pipeline_refuses_a_processor_saved_for_another_layout(tiny_processor, tiny_vq, tiny_config):
    from flashvideo import FlashVideoPipeline

    other = FlashVideoConfig(**{**tiny_config.to_dict(), "max_frames": 8, "text_token_start": None,
                                "image_token_start": None, "vocab_size": None})  # fmt: skip
    with pytest.raises(ValueError, match="max_frames=6 but the key-frame model's config has 8"):
        FlashVideoPipeline(model=FlashVideoForCausalLM(other), processor=tiny_processor, vqvae=tiny_vq, device="cpu")


@pytest.fixture
def saved_pipeline(tiny_pipeline, tmp_path):
    folder = tmp_path / "pipeline"
    tiny_pipeline.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("missing", ["interpolation", "interpolation/config.json", "interpolation/model.safetensors"])
def test_a_missing_interpolation_model_is_named_not_replaced(saved_pipeline, missing):
    import shutil

    from flashvideo import FlashVideoPipeline
    from flashvideo.pipeline_flashvideo import KEY_FRAME_MODEL

    assert FlashVideoPipeline.from_pretrained(saved_pipeline).interpolation_model is not None  # complete: loads
    target = saved_pipeline / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    named = saved_pipeline / (missing if missing != "interpolation" else "interpolation/config.json")
    with pytest.raises(FileNotFoundError, match=f"{named} is missing. Pass interpolation_model='key_frame_model'"):
        FlashVideoPipeline.from_pretrained(saved_pipeline)
    # Only when asked for does the key-frame model stand in.
    pipe = FlashVideoPipeline.from_pretrained(saved_pipeline, interpolation_model=KEY_FRAME_MODEL)
    assert pipe.interpolation_model is pipe.model
    with pytest.raises(ValueError, match="interpolation_model must be"):
        FlashVideoPipeline.from_pretrained(saved_pipeline, interpolation_model="the other one")
